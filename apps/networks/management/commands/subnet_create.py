from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import network_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a subnet of a network."

    def add_arguments(self, parser):
        parser.add_argument("network", help="name or id")
        parser.add_argument("cidr")
        parser.add_argument("--name", default="")
        parser.add_argument("--gateway", help="the gateway address, or 'none' (default: the first address)")
        parser.add_argument("--no-dhcp", action="store_true")
        parser.add_argument("--dns", action="append", default=[], help="a DNS server (repeatable)")
        parser.add_argument("--ipv6-mode", choices=["slaac", "dhcpv6-stateful", "dhcpv6-stateless"],
                            help="IPv6 RA and address mode")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        network = find(network_list(user=user, project=project), options["network"], "Network")
        gateway = options["gateway"]
        gateway = services.UNSET if gateway is None else (None if gateway == "none" else gateway)
        version = 6 if ":" in options["cidr"] else 4
        try:
            subnet = services.subnet_create(
                user=user, project=project, network=network, cidr=options["cidr"], ip_version=version,
                name=options["name"], gateway_ip=gateway, enable_dhcp=not options["no_dhcp"],
                dns_nameservers=options["dns"], ipv6_ra_mode=options["ipv6_mode"],
                ipv6_address_mode=options["ipv6_mode"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"subnet {subnet.name or '-'} {subnet.id} {subnet.cidr} gateway {subnet.gateway_ip}")
