from django.core.management.base import BaseCommand, CommandError

from apps.hosts.selectors import host_get
from apps.networks import services
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Send a host its whole network state (its agent converges to it and removes what is not "
            "in it), as after an agent restart.")

    def add_arguments(self, parser):
        parser.add_argument("hostname")

    def handle(self, *args, hostname, **options):
        try:
            host = host_get(hostname=hostname)
            services.host_network_resync(host=host)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"sent host {host.hostname} its network state")
