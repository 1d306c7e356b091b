from django.core.management.base import BaseCommand, CommandError

from apps.hosts import services
from apps.hosts.selectors import host_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Disable a host: the scheduler sends it no new instances; running ones stay."

    def add_arguments(self, parser):
        parser.add_argument("hostname")
        parser.add_argument("--reason", default="")

    def handle(self, *args, hostname, reason, **options):
        try:
            host = services.host_disable(host=host_get(hostname=hostname), reason=reason)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"host {host.hostname} disabled")
