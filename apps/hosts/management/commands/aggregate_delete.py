from django.core.management.base import BaseCommand, CommandError

from apps.hosts import services
from apps.hosts.management.commands._common import find_aggregate
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Delete a host aggregate (refused while it has hosts)."

    def add_arguments(self, parser):
        parser.add_argument("aggregate", help="name or id")

    def handle(self, *args, aggregate, **options):
        aggregate = find_aggregate(aggregate)
        try:
            services.aggregate_delete(aggregate=aggregate)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"aggregate {aggregate.name} deleted")
