"""Fixtures for the fast tests: the control plane in-process, agents on the fake driver."""

from dataclasses import dataclass

import pytest
from django.utils import timezone

from agents.compute.driver import reset_driver
from agents.compute.fake import FakeDriver
from agents.network.driver import get_network_driver, reset_network_driver
from agents.network.fake import FakeNetworkDriver
from agents.storage.volumes import reset_volume_driver
from agents.storage.volumes.fake import FakeVolumeDriver
from apps.hosts.models import Host, HostState
from apps.images.models import Image, ImageStatus, Visibility
from apps.instances import services as compute_services
from apps.instances.models import Flavor, Instance
from apps.networks import services as network_services
from apps.tenants.models import Project, Role, User
from apps.tenants.services import project_create, role_grant, token_issue
from apps.volumes import services as volume_services
from apps.volumes.models import Message, Volume


@pytest.fixture(autouse=True)
def fake_driver(settings):
    settings.CLOUDMGR_AGENTS_IN_PROCESS = True
    # Fast hashing: these tests make users by the dozen; the real hasher is for real passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A private cache per test: rate-limit counters must not leak between tests or runs.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    driver = FakeDriver()
    reset_driver(driver)
    # The network agent's tasks run in-process too: never on the real kernel from a unit test.
    reset_network_driver(FakeNetworkDriver())
    yield driver
    reset_driver()
    reset_network_driver()


@dataclass
class World:
    project: Project
    other_project: Project
    admin: User
    member: User
    reader: User
    outsider: User  # member of other_project only
    flavor: Flavor
    image: Image

    def token(self, user: User, project: Project | None = None) -> str:
        key, _ = token_issue(user=user, project=project or self.project)
        return key


def make_host(hostname: str = "node1", vcpus: int = 8, memory_mib: int = 8192, disk_gb: int = 100, **fields) -> Host:
    fields.setdefault("state", HostState.UP)
    return Host.objects.create(
        hostname=hostname,
        queue=f"host.{hostname}",
        vcpus=vcpus,
        memory_mib=memory_mib,
        disk_gb=disk_gb,
        cpu_allocation_ratio=1.0,
        ram_allocation_ratio=1.0,
        disk_allocation_ratio=1.0,
        last_heartbeat=timezone.now(),
        **fields,
    )


@pytest.fixture
def host(world) -> Host:
    return make_host("node1")


@pytest.fixture
def net() -> FakeNetworkDriver:
    """The fake network driver that the in-process network agent tasks use."""
    return get_network_driver()


def fresh(obj):
    """``obj`` read again from the database."""
    return type(obj).objects.get(pk=obj.pk)


def make_routed_network(world: "World", *, default_external: bool = False) -> dict:
    """A host; the admin's external network ``public`` (flat, 172.24.4.0/24, no DHCP); project
    alpha's network ``private`` (10.0.0.0/24) with router ``r1`` between the two."""
    admin, member, project = world.admin, world.member, world.project
    host = make_host()
    ext = network_services.network_create(user=admin, project=project, name="public", external=True,
                                          is_default=default_external, network_type="flat",
                                          physical_network="public")
    network_services.subnet_create(user=admin, project=project, network=ext, cidr="172.24.4.0/24", enable_dhcp=False)
    network = network_services.network_create(user=member, project=project, name="private")
    subnet = network_services.subnet_create(user=member, project=project, network=network, cidr="10.0.0.0/24")
    router = network_services.router_create(user=member, project=project, name="r1",
                                            external_gateway_info={"network_id": str(ext.pk)})
    network_services.router_interface_add(router=router, user=member, project=project, subnet_id=subnet.pk)
    return {"host": host, "external": ext, "network": network, "subnet": subnet, "router": router}


@pytest.fixture
def world(db) -> World:
    project = project_create(name="alpha")
    other = project_create(name="beta")
    admin = User.objects.create_superuser("root", password="pw-root-123")
    member = User.objects.create_user("alice", password="pw-alice-123")
    reader = User.objects.create_user("rita", password="pw-rita-123")
    outsider = User.objects.create_user("bob", password="pw-bob-123")
    role_grant(user=member, project=project, role=Role.MEMBER)
    role_grant(user=reader, project=project, role=Role.READER)
    role_grant(user=outsider, project=other, role=Role.MEMBER)
    flavor = Flavor.objects.create(id="42", name="m1.nano", vcpus=1, ram=128, disk=1)
    image = Image.objects.create(
        project=project, name="testvm", status=ImageStatus.ACTIVE, disk_format="qcow2",
        visibility=Visibility.PUBLIC, size=20 * 1024 * 1024, virtual_size=64 * 1024 * 1024,
    )
    return World(project, other, admin, member, reader, outsider, flavor, image)


def ensure_host(hostname: str = "node1") -> Host:
    return Host.objects.filter(hostname=hostname).first() or make_host(hostname)


@pytest.fixture
def fake_storage():
    """The fake volume driver that the in-process storage agent tasks use."""
    driver = FakeVolumeDriver(hostname="node1")
    reset_volume_driver(driver)
    yield driver
    reset_volume_driver()


@pytest.fixture
def network_objects(world):
    """One network object of each kind in project alpha (and the public network, the admin's)."""
    ensure_host()
    member = {"user": world.member, "project": world.project}
    ext = network_services.network_create(user=world.admin, project=world.project, name="public", external=True,
                                          network_type="flat", physical_network="public")
    network_services.subnet_create(user=world.admin, project=world.project, network=ext, cidr="172.24.4.0/24",
                                   enable_dhcp=False)
    network = network_services.network_create(**member, name="private")
    subnet = network_services.subnet_create(**member, network=network, cidr="10.0.0.0/24", name="private-subnet")
    port = network_services.port_create(**member, network=network, name="p1")
    router = network_services.router_create(**member, name="r1", external_gateway_info={"network_id": str(ext.pk)})
    network_services.router_interface_add(router=router, **member, subnet_id=subnet.pk)
    fip = network_services.floating_ip_create(**member, floating_network_id=ext.pk)
    group = network_services.security_group_create(**member, name="web")
    rule = network_services.security_group_rule_create(**member, group=group, direction="ingress", protocol="tcp",
                                                       port_range_min=22, port_range_max=22)
    return {"networks": network, "subnets": subnet, "ports": port, "routers": router, "floatingips": fip,
            "security-groups": group, "security-group-rules": rule, "external": ext}


@pytest.fixture
def volume_objects(world, fake_storage):
    """One volume object of each kind in project alpha, and the server one volume is attached to."""
    ensure_host()
    volume_services.volume_type_default_ensure()
    volume = volume_services.volume_create(user=world.member, project=world.project, size=1, name="v1")
    snapshot = volume_services.snapshot_create(volume=volume, user=world.member, name="s1")
    backup = volume_services.backup_create(volume=Volume.objects.get(pk=volume.pk), user=world.member, name="b1")
    vm = compute_services.instance_create(user=world.member, project=world.project, name="vm1", flavor=world.flavor,
                                          image=world.image)
    vm = Instance.objects.select_related("host").get(pk=vm.pk)
    other = volume_services.volume_create(user=world.member, project=world.project, size=1, name="attached")
    attachment = volume_services.volume_attach(volume=other, instance=vm, user=world.member)
    spare = volume_services.volume_create(user=world.member, project=world.project, size=1, name="spare")
    transfer, _ = volume_services.transfer_create(volume=spare, user=world.member, name="t1")
    Message.objects.create(project=world.project, resource_type="VOLUME", resource_uuid=volume.pk,
                           event_id="VOLUME_VOLUME_001_001", user_message="create volume: boom",
                           expires_at="2099-01-01T00:00:00Z")
    return {"volumes": volume, "snapshots": snapshot, "backups": backup, "attachments": attachment,
            "os-volume-transfer": transfer, "messages": Message.objects.get(), "server": vm}
