from django.apps import AppConfig


class VolumesConfig(AppConfig):
    name = "apps.volumes"
    default_auto_field = "django.db.models.BigAutoField"
