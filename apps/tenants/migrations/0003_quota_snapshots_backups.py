from django.conf import settings
from django.db import migrations, models

NEW = ("snapshots", "backups")


def add_quotas(apps, schema_editor):
    """Existing projects get the new volume quotas (new ones get them from project_create)."""
    Project = apps.get_model("tenants", "Project")
    Quota = apps.get_model("tenants", "Quota")
    for project in Project.objects.all():
        for resource in NEW:
            Quota.objects.get_or_create(project=project, resource=resource,
                                        defaults={"limit": settings.CLOUDMGR_DEFAULT_QUOTAS[resource]})


def remove_quotas(apps, schema_editor):
    apps.get_model("tenants", "Quota").objects.filter(resource__in=NEW).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_identity'),
    ]

    operations = [
        migrations.AlterField(
            model_name='quota',
            name='resource',
            field=models.CharField(choices=[('instances', 'Instances'), ('cores', 'Cores'), ('ram', 'Ram'), ('volumes', 'Volumes'), ('gigabytes', 'Gigabytes'), ('snapshots', 'Snapshots'), ('backups', 'Backups'), ('networks', 'Networks'), ('ports', 'Ports'), ('floating_ips', 'Floating Ips'), ('security_groups', 'Security Groups')], max_length=32),
        ),
        migrations.RunPython(add_quotas, remove_quotas),
    ]
