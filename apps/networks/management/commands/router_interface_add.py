from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import router_list, subnet_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Attach a router to a subnet (its gateway address becomes the router's leg)."

    def add_arguments(self, parser):
        parser.add_argument("router", help="name or id")
        parser.add_argument("subnet", help="name or id")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        router = find(router_list(user=user, project=project), options["router"], "Router")
        subnet = find(subnet_list(user=user, project=project), options["subnet"], "Subnet")
        try:
            info = services.router_interface_add(router=router, user=user, project=project, subnet_id=subnet.pk)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"router {router.name} {router.id} port {info['port_id']} on subnet {subnet.cidr}")
