import time
import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction

from cloudmgr.models import BaseModel


class HostState(models.TextChoices):
    """What the heartbeats say (Nova's service state)."""

    UP = "up"
    DOWN = "down"


class HostStatus(models.TextChoices):
    """What the operator says (Nova's service status)."""

    ENABLED = "enabled"
    DISABLED = "disabled"


def _cpu_ratio() -> float:
    return settings.CLOUDMGR_CPU_ALLOCATION_RATIO


def _ram_ratio() -> float:
    return settings.CLOUDMGR_RAM_ALLOCATION_RATIO


def _disk_ratio() -> float:
    return settings.CLOUDMGR_DISK_ALLOCATION_RATIO


_last_usage_key = 0


def _usage_key() -> int:
    """An increasing integer, as an auto-increment's would be (the counters' rows then lie in
    the order hosts came, which is the order the scheduler mostly reads them in: 40% faster than
    keys at random), but set when the Host object is made, so that the object always holds it:
    the nanoseconds since the epoch, past the last key this process gave. The unique constraint
    turns away the one-in-billions clash of two processes in one nanosecond."""
    global _last_usage_key
    _last_usage_key = max(time.time_ns(), _last_usage_key + 1)
    return _last_usage_key


# Nova's zone for hosts in no zone aggregate (its default_availability_zone).
DEFAULT_AVAILABILITY_ZONE = "nova"


class Host(BaseModel):
    hostname = models.CharField(max_length=255, unique=True)
    queue = models.CharField(max_length=255)
    virt_type = models.CharField(max_length=16, default="qemu")
    availability_zone = models.CharField(max_length=255, default=DEFAULT_AVAILABILITY_ZONE)
    vcpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveIntegerField(default=0)
    disk_gb = models.PositiveIntegerField(default=0)
    cpu_allocation_ratio = models.FloatField(default=_cpu_ratio)
    ram_allocation_ratio = models.FloatField(default=_ram_ratio)
    disk_allocation_ratio = models.FloatField(default=_disk_ratio)
    state = models.CharField(max_length=8, choices=HostState.choices, default=HostState.DOWN)
    status = models.CharField(max_length=8, choices=HostStatus.choices, default=HostStatus.ENABLED)
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    # Down whatever its heartbeats say (Nova's forced_down): an operator who fenced the host.
    forced_down = models.BooleanField(default=False)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=32, blank=True, default="")
    # What the agent reports for os-hypervisors: QEMU's version (7.2.0 is 7002000) and the host CPU.
    hypervisor_version = models.PositiveIntegerField(default=0)
    cpu_info = models.JSONField(default=dict, blank=True)
    # The guests' architecture (the host CPU's, from cpu_info), for the scheduler's image filter.
    architecture = models.CharField(max_length=32, default="x86_64")
    # The last heartbeat's domains ({instance id: power state}) for the reconciler; may include
    # domains no record owns (another cloud on the same libvirt).
    domains = models.JSONField(default=dict, blank=True)
    # The key of its usage counters (HostClaimed, HostReleased). The scheduler joins hosts to
    # them on each placement, and SQLite does that join far faster on an integer key (the
    # counters' rowid) than on the UUID: 1,000 hosts in 0.58 ms instead of 1.35 ms, timed
    # interleaved (docs/compute.md).
    usage_key = models.BigIntegerField(unique=True, default=_usage_key, editable=False)

    class Meta:
        ordering = ["hostname"]
        indexes = [
            # Every column the scheduler filters and weighs hosts by (apps.instances.scheduler),
            # so that its query that weighs every host (soft affinity) reads this index and not
            # the rows, whose heartbeat JSON (domains, cpu_info) is most of their size.
            models.Index(fields=["state", "status", "availability_zone", "architecture", "vcpus",
                                 "cpu_allocation_ratio", "memory_mib", "ram_allocation_ratio", "disk_gb",
                                 "disk_allocation_ratio", "hostname", "id", "usage_key"], name="hosts_host_scheduler"),
        ]

    def __str__(self) -> str:
        return self.hostname


class Aggregate(models.Model):
    """Nova's host aggregate: a named group of hosts with metadata. The metadata key
    ``availability_zone`` puts its hosts in that zone; each host's ``availability_zone`` is kept
    from its aggregates by the services (the scheduler filters on the host's column)."""

    id = models.BigAutoField(primary_key=True)  # an integer, as Nova's (its uuid only shows from 2.41)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255, unique=True)
    metadata = models.JSONField(default=dict, blank=True)
    hosts = models.ManyToManyField(Host, related_name="aggregates", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def availability_zone(self) -> str | None:
        return self.metadata.get("availability_zone")


class _HostCounter(models.Model):
    id = models.BigAutoField(primary_key=True)  # its host's usage_key
    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="+")
    vcpus = models.BigIntegerField(default=0)
    memory_mib = models.BigIntegerField(default=0)
    disk_gb = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.host_id}: {self.vcpus} vCPUs, {self.memory_mib} MiB, {self.disk_gb} GB"


class HostClaimed(_HostCounter):
    """Everything ever placed on a host (vCPUs, RAM, root disk), and every growth of it.

    A host's usage by its live instances is claimed - released (``HostReleased``): both only
    grow, each in a row of its own, so that a placement (which locks the claimed row) never
    waits for a delete (which writes the released row), whatever order the two transactions
    take their other locks in (a create locks its quota then a host; a delete, the reverse).
    The scheduler reads them to filter and weigh hosts in one cheap query instead of summing
    each host's instances per placement. Database triggers keep them exact on every write to
    instances, whatever the path (create, delete, reschedule, resize, revert, rebuild, a test's
    bulk insert); the ORM never writes them. See ``usage_triggers_ensure``.

    ``free_memory_mib`` is the host's free RAM (capacity x ratio - claimed + released) as its
    last claim computed it, in an index: the weigher's order, so that the scheduler reads the
    best few hosts and not every host. A release or a new capacity leaves this row alone (the
    lock above) and records the host in ``HostUsageChanged`` instead; the scheduler weighs those
    hosts from their counters until a claim recomputes the column and clears them.
    """

    free_memory_mib = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["-free_memory_mib", "id"], name="hosts_claimed_free_memory")]


class HostReleased(_HostCounter):
    """Everything ever freed on a host (deletes, moves away, shrinks): see ``HostClaimed``."""


class HostUsageChanged(models.Model):
    """A host whose free RAM changed (a release, a new capacity or RAM ratio) since its claimed
    row's ``free_memory_mib`` was computed. The triggers only insert these rows, which no other
    transaction locks: a delete never waits for a placement. A claim on the host deletes them
    before it recomputes the column."""

    id = models.BigAutoField(primary_key=True)
    usage_key = models.BigIntegerField(db_index=True)  # the host's

    def __str__(self) -> str:
        return f"host {self.usage_key}"


# A live instance (not soft-deleted) on a host counts towards its usage. A change adds its OLD
# row to the released counters and its NEW row to the claimed ones, except on the same host,
# where only the growth is claimed and only the shrink released. Every new host gets its two
# (empty) rows from a trigger too.
_FLAVOR_READS = ("vcpus", "memory_mib", "root_gb", "ephemeral_gb", "swap_mb")
_READS = (*_FLAVOR_READS, *(f"old_{column}" for column in _FLAVOR_READS))  # the instance columns counted
_NOW = {column: f"{{row}}.{column}" for column in _FLAVOR_READS}
_BEFORE = {column: f"COALESCE({{row}}.old_{column}, {{row}}.{column})" for column in _FLAVOR_READS}  # a resize's


def _larger(a: str, b: str) -> str:
    return f"(CASE WHEN {b} > {a} THEN {b} ELSE {a} END)"


def _local_gb(amounts: dict) -> str:
    return f"({amounts['root_gb']} + {amounts['ephemeral_gb']} + ({amounts['swap_mb']} + 1023) / 1024)"


# counter -> what an instance row takes of it, in SQL ("{row}": NEW, OLD or an alias). Disk is
# root, ephemeral and swap rounded up to GiB (apps.instances.models.local_gb). During a resize
# (old_* set until it is confirmed or reverted) a server holds the larger of its old and new
# flavors' amounts, as Nova holds both: a revert always has room to go back.
_COLUMNS = (("vcpus", _larger(_NOW["vcpus"], _BEFORE["vcpus"])),
            ("memory_mib", _larger(_NOW["memory_mib"], _BEFORE["memory_mib"])),
            ("disk_gb", _larger(_local_gb(_NOW), _local_gb(_BEFORE))))


def _counted(table: str, row: str, amounts: dict, when: str) -> str:
    sets = ", ".join(f"{counter} = {counter} + {amounts[counter]}" for counter, _ in _COLUMNS)
    return f"UPDATE {table} SET {sets} WHERE host_id = {row}.host_id{when}"


# A host's free RAM over h (the host), c and r (its claimed and released rows). The triggers
# store it in the claimed row and the scheduler filters and weighs by it: one expression, so
# that the stored value and the scheduler's agree to the last bit.
FREE_MEMORY = "h.memory_mib * h.ram_allocation_ratio - c.memory_mib + r.memory_mib"
# The claimed row's free_memory_mib recomputed (the row being updated is hosts_hostclaimed).
_SET_FREE_MEMORY = (f"UPDATE hosts_hostclaimed SET free_memory_mib = (SELECT {FREE_MEMORY} FROM hosts_hostclaimed c "
                    "JOIN hosts_host h ON h.usage_key = c.id JOIN hosts_hostreleased r ON r.id = c.id "
                    "WHERE c.id = hosts_hostclaimed.id)")


def _claim(row: str, amounts: dict, when: str = "") -> list[str]:
    """Count a claim, then recompute the host's free RAM. Its pending changes are deleted before
    the released row is read: PostgreSQL gives each statement of a trigger a newer snapshot, so a
    release this claim does not count stays pending."""
    return [_counted("hosts_hostclaimed", row, amounts, when),
            "DELETE FROM hosts_hostusagechanged WHERE usage_key = "
            f"(SELECT id FROM hosts_hostclaimed WHERE host_id = {row}.host_id){when}",
            f"{_SET_FREE_MEMORY} WHERE host_id = {row}.host_id{when}"]


def _release(row: str, amounts: dict, when: str = "") -> list[str]:
    """Count a release, and mark the host's free RAM as changed (without touching its claimed row,
    which a placement may hold locked)."""
    return [_counted("hosts_hostreleased", row, amounts, when),
            f"INSERT INTO hosts_hostusagechanged (usage_key) SELECT id FROM hosts_hostreleased "
            f"WHERE host_id = {row}.host_id{when}"]


def _whole(row: str) -> dict:
    return {counter: amount.format(row=row) for counter, amount in _COLUMNS}


def _growth(greatest: str, grown: str, shrunk: str) -> dict:
    return {counter: f"{greatest}({amount.format(row=grown)} - {amount.format(row=shrunk)}, 0)"
            for counter, amount in _COLUMNS}


_LIVE = "{row}.host_id IS NOT NULL AND {row}.deleted_at IS NULL"
_SAME_HOST = f"{_LIVE.format(row='OLD')} AND {_LIVE.format(row='NEW')} AND OLD.host_id = NEW.host_id"
_GREW = " OR ".join(f"{amount.format(row='NEW')} > {amount.format(row='OLD')}" for _, amount in _COLUMNS)
_SHRANK = " OR ".join(f"{amount.format(row='NEW')} < {amount.format(row='OLD')}" for _, amount in _COLUMNS)
_CHANGED = ("OLD.host_id IS DISTINCT FROM NEW.host_id OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at OR "
            + " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in _READS))
_USAGE_COLUMNS = "host_id, deleted_at, " + ", ".join(_READS)
_NEW_HOST = [
    "INSERT INTO hosts_hostclaimed (id, host_id, vcpus, memory_mib, disk_gb, free_memory_mib) "
    "VALUES (NEW.usage_key, NEW.id, 0, 0, 0, NEW.memory_mib * NEW.ram_allocation_ratio)",
    "INSERT INTO hosts_hostreleased (id, host_id, vcpus, memory_mib, disk_gb) VALUES (NEW.usage_key, NEW.id, 0, 0, 0)",
]
# A heartbeat that reports another amount of RAM, an operator's new RAM ratio.
_NEW_CAPACITY = "OLD.memory_mib <> NEW.memory_mib OR OLD.ram_allocation_ratio <> NEW.ram_allocation_ratio"
_CAPACITY_CHANGED = "INSERT INTO hosts_hostusagechanged (usage_key) VALUES (NEW.usage_key)"


def _statements(statements: list[str]) -> str:
    return "; ".join(statements) + ";"


def _sqlite_update() -> str:
    """The update trigger's four cases, each statement guarded by its case (SQLite's triggers
    have no IF)."""
    moved, same = f" AND NOT ({_SAME_HOST})", f" AND {_SAME_HOST}"
    return _statements([
        *_release("OLD", _whole("OLD"), f" AND {_LIVE.format(row='OLD')}{moved}"),
        *_claim("NEW", _whole("NEW"), f" AND {_LIVE.format(row='NEW')}{moved}"),
        *_claim("NEW", _growth("MAX", "NEW", "OLD"), f"{same} AND ({_GREW})"),
        *_release("OLD", _growth("MAX", "OLD", "NEW"), f"{same} AND ({_SHRANK})"),
    ])


# (trigger name, table) -> its statements, per database vendor.
_TRIGGERS = {
    "sqlite": {
        ("host_usage_on_host_insert", "hosts_host"): [
            f"CREATE TRIGGER host_usage_on_host_insert AFTER INSERT ON hosts_host BEGIN {_statements(_NEW_HOST)} END",
        ],
        ("host_usage_on_host_update", "hosts_host"): [
            "CREATE TRIGGER host_usage_on_host_update AFTER UPDATE OF memory_mib, ram_allocation_ratio ON hosts_host "
            f"WHEN {_NEW_CAPACITY} BEGIN {_CAPACITY_CHANGED}; END",
        ],
        ("host_usage_on_instance_insert", "instances_instance"): [
            "CREATE TRIGGER host_usage_on_instance_insert AFTER INSERT ON instances_instance "
            f"WHEN {_LIVE.format(row='NEW')} BEGIN {_statements(_claim('NEW', _whole('NEW')))} END",
        ],
        ("host_usage_on_instance_update", "instances_instance"): [
            f"CREATE TRIGGER host_usage_on_instance_update AFTER UPDATE OF {_USAGE_COLUMNS} ON instances_instance "
            f"WHEN {_CHANGED.replace('IS DISTINCT FROM', 'IS NOT')} BEGIN {_sqlite_update()} END",
        ],
        ("host_usage_on_instance_delete", "instances_instance"): [
            "CREATE TRIGGER host_usage_on_instance_delete AFTER DELETE ON instances_instance "
            f"WHEN {_LIVE.format(row='OLD')} BEGIN {_statements(_release('OLD', _whole('OLD')))} END",
        ],
    },
    "postgresql": {
        ("host_usage_on_host_insert", "hosts_host"): [
            "CREATE OR REPLACE FUNCTION host_usage_on_host_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_statements(_NEW_HOST)} RETURN NULL; END $$",
            "CREATE TRIGGER host_usage_on_host_insert AFTER INSERT ON hosts_host FOR EACH ROW "
            "EXECUTE FUNCTION host_usage_on_host_insert()",
        ],
        ("host_usage_on_host_update", "hosts_host"): [
            "CREATE OR REPLACE FUNCTION host_usage_on_host_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_CAPACITY_CHANGED}; RETURN NULL; END $$",
            "CREATE TRIGGER host_usage_on_host_update AFTER UPDATE OF memory_mib, ram_allocation_ratio ON hosts_host "
            f"FOR EACH ROW WHEN ({_NEW_CAPACITY}) EXECUTE FUNCTION host_usage_on_host_update()",
        ],
        ("host_usage_on_instance_write", "instances_instance"): [
            "CREATE OR REPLACE FUNCTION host_usage_on_instance_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP = 'UPDATE' AND {_SAME_HOST} THEN "
            f"IF {_GREW} THEN {_statements(_claim('NEW', _growth('GREATEST', 'NEW', 'OLD')))} END IF; "
            f"IF {_SHRANK} THEN {_statements(_release('OLD', _growth('GREATEST', 'OLD', 'NEW')))} END IF; "
            "RETURN NULL; END IF; "
            f"IF TG_OP <> 'INSERT' AND {_LIVE.format(row='OLD')} THEN {_statements(_release('OLD', _whole('OLD')))} "
            "END IF; "
            f"IF TG_OP <> 'DELETE' AND {_LIVE.format(row='NEW')} THEN {_statements(_claim('NEW', _whole('NEW')))} "
            "END IF; "
            "RETURN NULL; END $$",
            "CREATE TRIGGER host_usage_on_instance_write AFTER INSERT OR DELETE ON instances_instance FOR EACH ROW "
            "EXECUTE FUNCTION host_usage_on_instance_change()",
        ],
        ("host_usage_on_instance_update", "instances_instance"): [
            f"CREATE TRIGGER host_usage_on_instance_update AFTER UPDATE OF {_USAGE_COLUMNS} ON instances_instance "
            f"FOR EACH ROW WHEN ({_CHANGED}) EXECUTE FUNCTION host_usage_on_instance_change()",
        ],
    },
}

_RECOUNT = [
    *(f"INSERT INTO hosts_host{kind} (id, host_id, vcpus, memory_mib, disk_gb) SELECT usage_key, id, 0, 0, 0 "
      f"FROM hosts_host WHERE id NOT IN (SELECT host_id FROM hosts_host{kind})" for kind in ("claimed", "released")),
    "UPDATE hosts_hostreleased SET vcpus = 0, memory_mib = 0, disk_gb = 0",
    "UPDATE hosts_hostclaimed SET "
    + ", ".join(f"{counter} = COALESCE((SELECT SUM({amount.format(row='i')}) FROM instances_instance i "
                f"WHERE i.host_id = hosts_hostclaimed.host_id AND i.deleted_at IS NULL), 0)"
                for counter, amount in _COLUMNS),
    _SET_FREE_MEMORY,
    "DELETE FROM hosts_hostusagechanged",
]


def _triggers(connection) -> dict:
    try:
        return _TRIGGERS[connection.vendor]
    except KeyError:
        raise ImproperlyConfigured(f"cloudmgr runs on SQLite or PostgreSQL, not {connection.vendor}.") from None


def _installed_triggers(connection) -> set:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
        else:
            cursor.execute("SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                           "WHERE NOT t.tgisinternal AND pg_table_is_visible(c.oid)")
        return set(cursor.fetchall())


def usage_triggers_drop(connection) -> None:
    with connection.cursor() as cursor:
        for name, table in _triggers(connection):
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if connection.vendor != "sqlite" else ""))
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS host_usage_on_host_insert(), host_usage_on_host_update(), "
                           "host_usage_on_instance_change()")


def usage_triggers_ensure(connection) -> bool:
    """Install the usage triggers if any is missing, then recount every host's usage from its
    instances; True if it had to. Runs after every ``migrate``: SQLite drops a table's triggers
    when Django rebuilds the table (most AlterField/AddField on instances or hosts do), and the
    instances written meanwhile were not counted."""
    tables = set(connection.introspection.table_names())
    if not {"hosts_host", "hosts_hostclaimed", "hosts_hostreleased", "hosts_hostusagechanged",
            "instances_instance"} <= tables:
        return False  # migrated backwards, or not yet forwards
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "instances_instance")}
        keyed = "usage_key" in {c.name for c in connection.introspection.get_table_description(cursor, "hosts_host")}
        weighed = "free_memory_mib" in {
            c.name for c in connection.introspection.get_table_description(cursor, "hosts_hostclaimed")}
    if not set(_READS) <= columns or not keyed or not weighed:
        return False  # an older schema, on the way forwards: a later migration installs them
    triggers = _triggers(connection)
    if set(triggers) <= _installed_triggers(connection):
        return False
    with transaction.atomic(using=connection.alias):
        usage_triggers_drop(connection)
        with connection.cursor() as cursor:
            for statements in triggers.values():
                for statement in statements:
                    cursor.execute(statement)
            for statement in _RECOUNT:
                cursor.execute(statement)
    return True
