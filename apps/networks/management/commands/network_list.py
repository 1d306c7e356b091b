from django.core.management.base import BaseCommand

from apps.networks.management.commands._common import actor, add_actor_arguments
from apps.networks.selectors import network_list


class Command(BaseCommand):
    help = "List the networks a project sees, with their subnets."

    def add_arguments(self, parser):
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        for network in network_list(user=user, project=project).prefetch_related("subnets").order_by("name"):
            cidrs = ",".join(s.cidr for s in network.subnets.all()) or "-"
            flags = " external" if network.external else ""
            flags += " shared" if network.shared else ""
            self.stdout.write(f"{network.name or '-'} {network.id} {network.network_type} {cidrs}{flags}")
