# Each host's free RAM in its claimed row, in an index (the scheduler reads the best few hosts, not
# all), and the hosts whose free RAM changed since (HostUsageChanged). The triggers that keep them
# change: they are dropped here, and the post-migrate check (usage_triggers_ensure) installs the
# new ones and recounts every host.

from django.db import migrations, models


def drop_triggers(apps, schema_editor):
    from apps.hosts.models import usage_triggers_drop

    usage_triggers_drop(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0009_host_usage_key"),
    ]

    operations = [
        migrations.RunPython(drop_triggers, migrations.RunPython.noop),
        migrations.CreateModel(
            name="HostUsageChanged",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("usage_key", models.BigIntegerField(db_index=True)),
            ],
        ),
        migrations.AddField(
            model_name="hostclaimed",
            name="free_memory_mib",
            field=models.FloatField(default=0),
        ),
        migrations.AddIndex(
            model_name="hostclaimed",
            index=models.Index(fields=["-free_memory_mib", "id"], name="hosts_claimed_free_memory"),
        ),
    ]
