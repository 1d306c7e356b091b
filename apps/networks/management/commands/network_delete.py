from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import network_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Delete a network and its subnets (refused while ports use it)."

    def add_arguments(self, parser):
        parser.add_argument("network", help="name or id")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        network = find(network_list(user=user, project=project), options["network"], "Network")
        try:
            services.network_delete(network=network, user=user, project=project)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"network {network.name} {network.id} deleted")
