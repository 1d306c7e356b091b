from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "apps.networks"
    default_auto_field = "django.db.models.BigAutoField"
