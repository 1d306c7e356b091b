"""What the network commands share with the others: the acting user and project, and finding an
object by name or id among those the actor sees."""

from apps.instances.management.commands._common import actor, add_actor_arguments, find

__all__ = ["actor", "add_actor_arguments", "find"]
