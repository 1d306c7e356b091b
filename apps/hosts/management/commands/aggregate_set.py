from django.core.management.base import BaseCommand, CommandError

from apps.hosts import services
from apps.hosts.management.commands._common import find_aggregate, parse_properties
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Set or unset a host aggregate's metadata, add or remove its hosts."

    def add_arguments(self, parser):
        parser.add_argument("aggregate", help="name or id")
        parser.add_argument("--property", dest="properties", action="append", default=[], metavar="KEY=VALUE",
                            help="set (repeatable)")
        parser.add_argument("--unset", action="append", default=[], metavar="KEY", help="remove (repeatable)")
        parser.add_argument("--add-host", action="append", default=[], metavar="HOST", help="repeatable")
        parser.add_argument("--remove-host", action="append", default=[], metavar="HOST", help="repeatable")

    def handle(self, *args, aggregate, properties, unset, add_host, remove_host, **options):
        aggregate = find_aggregate(aggregate)
        metadata = {**parse_properties(properties), **{key: None for key in unset}}
        try:
            if metadata:
                aggregate = services.aggregate_set_metadata(aggregate=aggregate, metadata=metadata)
            for hostname in add_host:
                aggregate = services.aggregate_add_host(aggregate=aggregate, hostname=hostname)
            for hostname in remove_host:
                aggregate = services.aggregate_remove_host(aggregate=aggregate, hostname=hostname)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"aggregate {aggregate.name} updated")
