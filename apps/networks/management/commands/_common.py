"""What the network commands share: the acting user and project (as the instance commands), and
finding an object by name or id among those the actor sees."""

from django.core.management.base import CommandError

from apps.instances.management.commands._common import actor, add_actor_arguments
from cloudmgr.models import first_by_name_or_id

__all__ = ["actor", "add_actor_arguments", "find"]


def find(queryset, name_or_id: str, what: str):
    found = first_by_name_or_id(queryset, name_or_id)
    if found is None:
        raise CommandError(f"{what} {name_or_id} could not be found.")
    return found
