from django.core.management.base import BaseCommand

from apps.hosts.selectors import host_list
from apps.instances.selectors import host_usage


class Command(BaseCommand):
    help = "List compute hosts with their state, status and capacity."

    def handle(self, *args, **options):
        row = "{:<24} {:<5} {:<9} {:>11} {:>15} {:>11}  {}"
        self.stdout.write(row.format("HOSTNAME", "STATE", "STATUS", "VCPUS", "RAM MIB", "DISK GB", "LAST HEARTBEAT"))
        for host in host_list():
            used = host_usage(host=host)
            self.stdout.write(
                row.format(
                    host.hostname,
                    host.state,
                    host.status,
                    f"{used.vcpus}/{host.vcpus}",
                    f"{used.memory_mib}/{host.memory_mib}",
                    f"{used.disk_gb}/{host.disk_gb}",
                    host.last_heartbeat.isoformat(timespec="seconds") if host.last_heartbeat else "never",
                )
            )
