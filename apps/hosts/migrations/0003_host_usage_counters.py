import django.db.models.deletion
from django.db import migrations, models


def install(apps, schema_editor):
    from apps.hosts.models import usage_triggers_ensure

    usage_triggers_ensure(schema_editor.connection)


def uninstall(apps, schema_editor):
    from apps.hosts.models import usage_triggers_drop

    usage_triggers_drop(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('hosts', '0002_host_domains'),
        ('instances', '0003_lifecycle_and_api'),
    ]

    operations = [
        migrations.CreateModel(
            name='HostClaimed',
            fields=[
                ('host', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='hosts.host')),
                ('vcpus', models.BigIntegerField(default=0)),
                ('memory_mib', models.BigIntegerField(default=0)),
                ('disk_gb', models.BigIntegerField(default=0)),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='HostReleased',
            fields=[
                ('host', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='hosts.host')),
                ('vcpus', models.BigIntegerField(default=0)),
                ('memory_mib', models.BigIntegerField(default=0)),
                ('disk_gb', models.BigIntegerField(default=0)),
            ],
            options={
                'abstract': False,
            },
        ),
        # Triggers keep them exact from here on (apps.hosts.models); they are re-checked after
        # every migrate, since SQLite drops them whenever Django rebuilds a table.
        migrations.RunPython(install, uninstall),
    ]
