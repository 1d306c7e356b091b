from django.conf import settings
from django.db import migrations


def default_type(apps, schema_editor):
    """Cinder's default volume type: used when a volume names none."""
    VolumeType = apps.get_model("volumes", "VolumeType")
    VolumeType.objects.get_or_create(name=settings.CLOUDMGR_VOLUME_DEFAULT_TYPE,
                                     defaults={"description": "Default Volume Type"})


class Migration(migrations.Migration):

    dependencies = [
        ("volumes", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(default_type, migrations.RunPython.noop),
    ]
