from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _ensure_usage_triggers(sender, using, **kwargs) -> None:
    from apps.hosts.models import usage_triggers_ensure

    usage_triggers_ensure(connections[using])


class HostsConfig(AppConfig):
    name = "apps.hosts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # SQLite drops a table's triggers when a migration rebuilds it: check them after each migrate.
        post_migrate.connect(_ensure_usage_triggers, sender=self)
