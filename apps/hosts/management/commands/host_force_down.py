from django.core.management.base import BaseCommand, CommandError

from apps.hosts import services
from apps.hosts.selectors import host_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Force a host down, whatever its heartbeats say (after fencing it): the scheduler sends it no "
            "instances and operations on its instances are refused. --clear lifts it.")

    def add_arguments(self, parser):
        parser.add_argument("hostname")
        parser.add_argument("--clear", action="store_true", help="no longer forced down: up again if it reports")

    def handle(self, *args, hostname, clear, **options):
        try:
            host = services.host_force_down(host=host_get(hostname=hostname), forced_down=not clear)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"host {host.hostname} {'no longer forced down' if clear else 'forced down'}: {host.state}")
