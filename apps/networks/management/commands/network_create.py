from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a network (add a subnet with subnet_create)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--shared", action="store_true", help="usable by every project (admins)")
        parser.add_argument("--external", action="store_true", help="router:external (admins)")
        parser.add_argument("--physical-network", help="a flat network on this physical network (admins)")
        parser.add_argument("--mtu", type=int)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        try:
            network = services.network_create(
                user=user, project=project, name=options["name"], shared=options["shared"],
                external=options["external"], mtu=options["mtu"], physical_network=options["physical_network"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"network {network.name} {network.id} {network.network_type} "
                          f"{network.segmentation_id or network.physical_network}")
