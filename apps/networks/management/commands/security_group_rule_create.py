from django.core.management.base import BaseCommand, CommandError

from apps.networks import services
from apps.networks.management.commands._common import actor, add_actor_arguments, find
from apps.networks.selectors import security_group_list
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Add a rule to a security group (e.g. let ICMP in: default --protocol icmp)."

    def add_arguments(self, parser):
        parser.add_argument("group", help="security group name or id")
        parser.add_argument("--direction", choices=["ingress", "egress"], default="ingress")
        parser.add_argument("--ethertype", choices=["IPv4", "IPv6"], default="IPv4")
        parser.add_argument("--protocol", help="tcp, udp, icmp, a number ... (default: any)")
        parser.add_argument("--port", help="a port or a range MIN:MAX (tcp, udp)")
        parser.add_argument("--remote-ip", help="a CIDR the traffic comes from (or goes to)")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        if options["group"] == "default":
            services.security_group_default(project=project)
        group = find(security_group_list(user=user, project=project).filter(project=project), options["group"],
                     "Security group")
        low = high = None
        if options["port"]:
            first, _, last = options["port"].partition(":")
            try:
                low, high = int(first), int(last or first)
            except ValueError as exc:
                raise CommandError(f"Invalid port range {options['port']}: use N or MIN:MAX.") from exc
        try:
            rule = services.security_group_rule_create(
                user=user, project=project, group=group, direction=options["direction"],
                ethertype=options["ethertype"], protocol=options["protocol"], port_range_min=low,
                port_range_max=high, remote_ip_prefix=options["remote_ip"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"rule {rule.id} {rule.direction} {rule.protocol or 'any'} in {group.name}")
