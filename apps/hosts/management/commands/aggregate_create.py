from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.hosts import services
from apps.hosts.management.commands._common import parse_properties
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a host aggregate, optionally an availability zone, with metadata."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--zone", help="the availability zone its hosts are in")
        parser.add_argument("--property", dest="properties", action="append", default=[], metavar="KEY=VALUE",
                            help="metadata (repeatable), e.g. disk=ssd for flavors that ask for it")

    def handle(self, *args, name, zone, properties, **options):
        metadata = parse_properties(properties)
        try:
            with transaction.atomic():  # no aggregate if its metadata is refused
                aggregate = services.aggregate_create(name=name, availability_zone=zone)
                if metadata:
                    aggregate = services.aggregate_set_metadata(aggregate=aggregate, metadata=metadata)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"aggregate {aggregate.name} created (id {aggregate.id})")
