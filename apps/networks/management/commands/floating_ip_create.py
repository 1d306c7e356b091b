from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import network_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Allocate a floating IP from an external network, associated with a port if given."

    def add_arguments(self, parser):
        parser.add_argument("--network", default="public", help="the external network (default: public)")
        parser.add_argument("--port", help="a port id to associate it with")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        network = find(network_list(user=user, project=project), options["network"], "Network")
        try:
            fip = services.floating_ip_create(user=user, project=project, floating_network_id=network.pk,
                                              port_id=options["port"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        target = f" -> {fip.fixed_ip_address}" if fip.fixed_ip_address else ""
        self.stdout.write(f"floating ip {fip.floating_ip_address} {fip.id}{target}")
