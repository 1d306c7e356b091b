from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import network_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a router, with a gateway to an external network if asked."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--external-gateway", help="the external network (name or id)")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        gateway = None
        if options["external_gateway"]:
            network = find(network_list(user=user, project=project), options["external_gateway"], "Network")
            gateway = {"network_id": str(network.pk)}
        try:
            router = services.router_create(user=user, project=project, name=options["name"],
                                            external_gateway_info=gateway)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"router {router.name} {router.id} on {router.host or 'no host yet'}")
