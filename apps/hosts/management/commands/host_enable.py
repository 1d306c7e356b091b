from django.core.management.base import BaseCommand, CommandError

from apps.hosts import services
from apps.hosts.selectors import host_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Enable a host again for new instances."

    def add_arguments(self, parser):
        parser.add_argument("hostname")

    def handle(self, *args, hostname, **options):
        try:
            host = services.host_enable(host=host_get(hostname=hostname))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"host {host.hostname} enabled")
