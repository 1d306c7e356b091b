from django.core.management.base import BaseCommand

from apps.hosts.selectors import aggregate_list


class Command(BaseCommand):
    help = "List host aggregates with their zone, hosts and metadata."

    def handle(self, *args, **options):
        row = "{:>4}  {:<24} {:<16} {:<32} {}"
        self.stdout.write(row.format("ID", "NAME", "ZONE", "HOSTS", "METADATA"))
        for aggregate in aggregate_list():
            metadata = ", ".join(f"{key}={value}" for key, value in sorted(aggregate.metadata.items()))
            hosts = ", ".join(sorted(host.hostname for host in aggregate.hosts.all()))
            self.stdout.write(row.format(aggregate.id, aggregate.name, aggregate.availability_zone or "-",
                                         hosts or "-", metadata or "-"))
