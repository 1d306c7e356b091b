"""What the aggregate commands share: finding an aggregate by name or id, and KEY=VALUE options."""

from django.core.management.base import CommandError

from apps.hosts.selectors import aggregate_list
from apps.instances.management.commands._common import find


def find_aggregate(name_or_id: str):
    return find(aggregate_list(), name_or_id, "Aggregate")


def parse_properties(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict, as `openstack aggregate set --property k=v` takes them."""
    parsed = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise CommandError(f"--property takes KEY=VALUE, not {pair!r}.")
        parsed[key] = value
    return parsed
