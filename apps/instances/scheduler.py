"""Pick a host for an instance: filter hosts that can take it, weigh them, claim under a lock.

Filters (Nova's names): ComputeFilter (up and enabled), AvailabilityZoneFilter, the resource
filters (RAM, vCPU, disk with each host's allocation ratios), ServerGroup(Anti)AffinityFilter,
ImagePropertiesFilter (``architecture``), AggregateInstanceExtraSpecsFilter (a flavor's
``aggregate_instance_extra_specs:KEY`` extra specs against its hosts' aggregates' metadata), and
the hosts a failed spawn already tried. Weigher:
free RAM, spread (most free first, default) or pack (least free first) by
``CLOUDMGR_SCHEDULER_WEIGHER``; soft (anti-)affinity weighs members' hosts first (last).

Every filter and weigher is one SQL query over the hosts, their usage counters (claimed -
released, ``apps.hosts.models.HostClaimed``, kept exact by triggers) and the group's members,
which reads the hosts in the order of an index on their free RAM and stops at the best few that
pass (see ``candidates``). A placement costs the same three
statements (select, claim, and loading the chosen host) whatever the number of hosts and
instances, and two more when the flavor asks for aggregate metadata (the aggregates and their
hosts, read beforehand).
The claim is one conditional statement: place the instance on the host if the host's claimed
row, locked, still leaves room. PostgreSQL re-evaluates that condition on the newest row once a
concurrent claim commits, and SQLite runs one writer at a time, so two creates can never both
take a host's last room; a host that filled meanwhile is skipped, and a claim never waits for a
host while holding another's lock. A server group's claims are serialized on its row, so its
policy is checked against every member already placed.
"""

import dataclasses
from dataclasses import dataclass, field
from math import floor

from django.conf import settings
from django.db import connection, transaction

from apps.hosts.models import FREE_MEMORY, Host, HostState, HostStatus
from apps.hosts.selectors import hosts_in_aggregates_with
from apps.instances.models import Instance, ServerGroup, local_gb

# The scope of a flavor's extra specs that its host's aggregates must hold (Nova's).
AGGREGATE_SPECS = "aggregate_instance_extra_specs:"

# Glance's names for an image's architecture that libvirt (the hosts' reports) spells otherwise.
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "i686": "i386", "arm64": "aarch64"}

MAX_CANDIDATES = 5  # the claim tries the best few; if they all filled meanwhile it asks again


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    disk_gb: int  # root, ephemeral and swap: Instance.local_gb
    availability_zone: str | None = None
    architecture: str | None = None
    exclude: frozenset = field(default_factory=frozenset)  # host pks already tried
    aggregate_metadata: tuple = ()  # (KEY, VALUE) pairs the flavor asks of its host's aggregates


@dataclass(frozen=True)
class Candidate:
    """A host that passed the filters: its keys, its name, and what it may hold (capacity x
    allocation ratio), all that the claim needs."""
    pk: object
    usage_key: int
    hostname: str
    vcpus: float
    memory_mib: float
    disk_gb: float

    @classmethod
    def of(cls, host: Host) -> "Candidate":
        return cls(host.pk, host.usage_key, host.hostname, host.vcpus * host.cpu_allocation_ratio,
                   host.memory_mib * host.ram_allocation_ratio, host.disk_gb * host.disk_allocation_ratio)


# What a candidate is made of, every column of it in the index hosts_host_scheduler, from which
# the query that weighs every host reads them and not the rows (their heartbeat's JSON).
_CANDIDATE_COLUMNS = ("h.id, h.usage_key, h.hostname, h.vcpus * h.cpu_allocation_ratio, "
                      "h.memory_mib * h.ram_allocation_ratio, h.disk_gb * h.disk_allocation_ratio")
# A host's usage is claimed (c) - released (r); see apps.hosts.models.HostClaimed.
_USAGE = "hosts_host h JOIN hosts_hostclaimed c ON c.id = h.usage_key JOIN hosts_hostreleased r ON r.id = c.id"
# The same, read from the claimed rows (SQLite keeps a CROSS JOIN's order; its planner would
# rather read every host from the covering index and sort them).
_USAGE_BY_CLAIMED = ("hosts_hostclaimed c CROSS JOIN hosts_host h CROSS JOIN hosts_hostreleased r "
                     "WHERE h.usage_key = c.id AND r.id = c.id")
_FREE_VCPUS = "h.vcpus * h.cpu_allocation_ratio - c.vcpus + r.vcpus"
_FREE_DISK = "h.disk_gb * h.disk_allocation_ratio - c.disk_gb + r.disk_gb"
_CHANGED = "SELECT usage_key FROM hosts_hostusagechanged"
# Live members of a server group per host.
_MEMBERS = ("SELECT i.host_id, COUNT(*) AS n FROM instances_instance i JOIN instances_servergroup_members m "
            "ON m.instance_id = i.id WHERE m.servergroup_id = %s AND i.deleted_at IS NULL AND i.host_id IS NOT NULL "
            "GROUP BY i.host_id")
# Hosts holding at least %s of them: a list the database builds once per query, cheaper to test
# each host against than a join.
_MEMBERS_AT_LEAST = f"SELECT host_id FROM ({_MEMBERS}) g WHERE g.n >= %s"


def _db_id(pk) -> object:
    return Host._meta.pk.get_db_prep_value(pk, connection)  # a UUID as this database stores it


def _filters(request: Request, group: ServerGroup | None) -> tuple[list[str], list]:
    """Every filter, as SQL conditions on h (the host), c and r (its usage counters)."""
    where = ["h.state = %s AND h.status = %s"]
    params: list = [HostState.UP.value, HostStatus.ENABLED.value]
    for free, asked in ((_FREE_VCPUS, request.vcpus), (FREE_MEMORY, request.memory_mib),
                        (_FREE_DISK, request.disk_gb)):
        where.append(f"{free} >= %s")
        params.append(asked)
    if request.availability_zone:
        where.append("h.availability_zone = %s")
        params.append(request.availability_zone)
    if request.architecture:  # the image's: a host whose CPU runs it
        wanted = request.architecture.lower()
        where.append("h.architecture = %s")
        params.append(ARCH_ALIASES.get(wanted, wanted))
    if request.exclude:
        where.append(f"h.id NOT IN ({', '.join(['%s'] * len(request.exclude))})")
        params += [_db_id(pk) for pk in request.exclude]
    if request.aggregate_metadata:  # aggregates are few: their hosts are found beforehand
        allowed = hosts_in_aggregates_with(metadata=dict(request.aggregate_metadata))
        where.append(f"h.id IN ({', '.join(['%s'] * len(allowed))})" if allowed else "1 = 0")
        params += [_db_id(pk) for pk in allowed]
    policy = group.policy if group is not None else None
    if policy == "anti-affinity":
        where.append(f"h.id NOT IN ({_MEMBERS_AT_LEAST})")
        params += [_db_id(group.pk), int((group.rules or {}).get("max_server_per_host", 1))]
    elif policy == "affinity":  # on the members' host, once there is one
        where.append(f"(h.id IN ({_MEMBERS_AT_LEAST}) OR NOT EXISTS ({_MEMBERS}))")
        params += [_db_id(group.pk), 1, _db_id(group.pk)]
    return where, params


def candidates(request: Request, group: ServerGroup | None = None, *,
               limit: int = MAX_CANDIDATES) -> list[Candidate]:
    """The ``limit`` best hosts that pass every filter, best first (most free RAM first, or
    least if packing; ties to the older host): every filter and weigher in one SQL query.

    It reads hosts in the order of the index on their claimed rows' free RAM and stops at the
    ``limit``-th that passes, instead of weighing every host; the few hosts whose free RAM
    changed since their last claim (``HostUsageChanged``) are weighed from their counters
    beside them. Soft (anti-)affinity weighs members first, so it weighs every host. (By hand:
    the ORM took longer to build and compile these queries than the database took to run them.)"""
    where, params = _filters(request, group)
    pack = getattr(settings, "CLOUDMGR_SCHEDULER_WEIGHER", "spread") == "pack"
    # The index's order, (free DESC, key) or its reverse: ties to the older host when spreading.
    order = "ASC" if pack else "DESC"
    tie = "DESC" if pack else "ASC"
    columns = f"{_CANDIDATE_COLUMNS}, {FREE_MEMORY} AS free"
    conditions = " AND ".join(where)
    policy = group.policy if group is not None else None
    if policy in ("soft-affinity", "soft-anti-affinity"):  # weighed by the members' count on each host
        sql = (f"SELECT {columns} FROM {_USAGE} LEFT JOIN ({_MEMBERS}) g ON g.host_id = h.id "
               f"WHERE {conditions} ORDER BY COALESCE(g.n, 0) {'DESC' if policy == 'soft-affinity' else 'ASC'}, "
               f"free {order}, h.usage_key {tie} LIMIT %s")
        params = [_db_id(group.pk), *params, limit]
    else:
        # A host not in HostUsageChanged has free_memory_mib equal to its free RAM, so the best
        # of those are the first in the index that pass; the others are weighed beside them.
        sql = (f"SELECT * FROM (SELECT {columns} FROM {_USAGE_BY_CLAIMED} AND {conditions} "
               f"AND c.free_memory_mib >= %s ORDER BY c.free_memory_mib {order}, c.id {tie} LIMIT %s) best "
               f"UNION SELECT {columns} FROM {_USAGE_BY_CLAIMED} AND {conditions} AND c.id IN ({_CHANGED}) "
               f"ORDER BY 7 {order}, 2 {tie} LIMIT %s")
        params = [*params, request.memory_mib, limit, *params, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Candidate(Host._meta.pk.to_python(pk), *rest) for pk, *rest, _free in cursor.fetchall()]


def _room(host: Candidate, vcpus: int, memory_mib: int, disk_gb: int) -> tuple[str, list]:
    """SQL selecting the host's claimed row, locked, if the host still has room for these
    resources. A conditional ``SELECT ... FOR UPDATE``: PostgreSQL re-evaluates the condition on
    the newest claimed row once a concurrent claim commits, and returns nothing if it no longer
    holds; the released row is read unlocked, as of the statement (a release still in flight
    only makes the check stricter). SQLite has no row locks: its writers take turns, a
    transaction at a time."""
    sql = ("SELECT 1 FROM hosts_hostclaimed c JOIN hosts_hostreleased r ON r.id = c.id "
           "WHERE c.id = %s AND c.vcpus - r.vcpus <= %s AND c.memory_mib - r.memory_mib <= %s "
           "AND c.disk_gb - r.disk_gb <= %s")
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE OF c"
    # Usage is whole: used + asked <= capacity x ratio  <=>  used <= floor(capacity x ratio - asked).
    return sql, [host.usage_key, floor(host.vcpus - vcpus), floor(host.memory_mib - memory_mib),
                 floor(host.disk_gb - disk_gb)]


def _place(instance: Instance, host: Candidate, request: Request) -> bool:
    """The claim, one conditional statement: put the instance on the host if it still has room,
    its claimed row locked (the triggers then count the instance in it)."""
    room, params = _room(host, request.vcpus, request.memory_mib, request.disk_gb)
    # PostgreSQL keeps the lock on a row whose re-check failed. A failed attempt is rolled back
    # to its savepoint, which frees it: a claim never waits for a host while holding another,
    # so two claims trying the same full hosts in opposite orders cannot deadlock.
    savepoint = transaction.savepoint() if connection.features.has_select_for_update else None
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE instances_instance SET host_id = %s WHERE id = %s AND EXISTS ({room})",
                       [_db_id(host.pk), _db_id(instance.pk), *params])
        placed = cursor.rowcount == 1
    if savepoint is not None and not placed:
        transaction.savepoint_rollback(savepoint)
    return placed


def request_for(instance: Instance, exclude=()) -> Request:
    architecture = None
    if instance.image is not None:
        architecture = (instance.image.properties or {}).get("architecture") or None
    aggregate_metadata = tuple(sorted((key.removeprefix(AGGREGATE_SPECS), str(value))
                                      for key, value in (instance.flavor.extra_specs or {}).items()
                                      if key.startswith(AGGREGATE_SPECS)))
    return Request(instance.vcpus, instance.memory_mib, instance.local_gb, instance.availability_zone or None,
                   architecture, frozenset(exclude), aggregate_metadata)


def claim(instance: Instance, group: ServerGroup | None = None, exclude=()) -> Host | None:
    """Place the instance on the best host that still fits once locked; None if no host can.
    Must run in the caller's transaction: the host's claimed row stays locked until it ends."""
    if group is not None and connection.features.has_select_for_update:
        # Serializes the group's claims (SQLite's writers take turns already). Groups never
        # change once made, so the caller's copy of the policy and rules is current.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM instances_servergroup WHERE id = %s FOR UPDATE", [_db_id(group.pk)])
    request = request_for(instance, exclude)
    while batch := candidates(request, group, limit=MAX_CANDIDATES):
        for host in batch:
            if _place(instance, host, request):
                # By hand: half what the ORM's get() takes to build and compile the query.
                instance.host = Host.objects.raw("SELECT * FROM hosts_host WHERE id = %s", [_db_id(host.pk)])[0]
                return instance.host
        # Every one filled between the query and its lock: ask again without them.
        request = dataclasses.replace(request, exclude=request.exclude | {host.pk for host in batch})
    return None


def fits_growth(instance: Instance, new: dict) -> bool:
    """Whether the instance's host has room for it to grow to ``new`` resources (a resize's
    flavor, a rebuild's larger root disk; what shrinks frees nothing until confirmed); if so its
    claimed row stays locked until the caller's transaction ends, in which it takes them."""
    growth = [max(0, amount) for amount in (
        new["vcpus"] - instance.vcpus, new["memory_mib"] - instance.memory_mib,
        local_gb(new["root_gb"], new["ephemeral_gb"], new["swap_mb"]) - instance.local_gb)]
    room, params = _room(Candidate.of(instance.host), *growth)
    with connection.cursor() as cursor:
        cursor.execute(room, params)
        return cursor.fetchone() is not None
