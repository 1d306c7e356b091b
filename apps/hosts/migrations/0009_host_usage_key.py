# The usage counters are keyed by an integer the host carries (Host.usage_key), not by the host's
# UUID: the scheduler joins every host to them on each placement. They are derived data: the
# tables are made anew and the post-migrate check (usage_triggers_ensure) reinstalls the
# triggers and recounts them from the instances.

import time

import django.db.models.deletion
from django.db import migrations, models

import apps.hosts.models


def drop_triggers(apps, schema_editor):
    from apps.hosts.models import usage_triggers_drop

    usage_triggers_drop(schema_editor.connection)


def key_hosts(apps, schema_editor):
    Host = apps.get_model("hosts", "Host")
    start = time.time_ns()
    for offset, pk in enumerate(Host.objects.order_by("created_at").values_list("pk", flat=True)):
        Host.objects.filter(pk=pk).update(usage_key=start + offset)


def counter(name):
    return migrations.CreateModel(
        name=name,
        fields=[
            ("id", models.BigAutoField(primary_key=True, serialize=False)),
            ("vcpus", models.BigIntegerField(default=0)),
            ("memory_mib", models.BigIntegerField(default=0)),
            ("disk_gb", models.BigIntegerField(default=0)),
            ("host", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                          to="hosts.host")),
        ],
        options={"abstract": False},
    )


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0008_host_scheduler_index"),
    ]

    operations = [
        migrations.RunPython(drop_triggers, migrations.RunPython.noop),
        migrations.DeleteModel(name="HostClaimed"),
        migrations.DeleteModel(name="HostReleased"),
        migrations.RemoveIndex(model_name="host", name="hosts_host_scheduler"),
        migrations.AddField(model_name="host", name="usage_key", field=models.BigIntegerField(null=True)),
        migrations.RunPython(key_hosts, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="host",
            name="usage_key",
            field=models.BigIntegerField(default=apps.hosts.models._usage_key, editable=False, unique=True),
        ),
        counter("HostClaimed"),
        counter("HostReleased"),
        migrations.AddIndex(
            model_name="host",
            index=models.Index(fields=["state", "status", "availability_zone", "architecture", "vcpus",
                                       "cpu_allocation_ratio", "memory_mib", "ram_allocation_ratio", "disk_gb",
                                       "disk_allocation_ratio", "hostname", "id", "usage_key"],
                               name="hosts_host_scheduler"),
        ),
    ]
