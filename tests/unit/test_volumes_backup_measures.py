"""A backup's result records what the storage host measured: Cinder's ``size`` (GiB of what was
read) and ``object_count`` (the chunks the backup stored). The storage agent's real chunking code
(``agents.storage.backups``, with a directory store) runs behind the fake volume driver on sparse
files, so the numbers are the ones a real storage host sends."""

import contextlib
from pathlib import Path

import pytest

from agents.specs import BackupSpec
from agents.storage import backups as agent_backups
from agents.storage.volumes import reset_volume_driver
from agents.storage.volumes.fake import FakeVolumeDriver
from apps.volumes import services
from apps.volumes.models import Backup
from apps.volumes.states import BackupStatus
from tests.unit.conftest import fresh
from tests.unit.test_volumes_api import base, client

pytestmark = pytest.mark.django_db(transaction=True)

GiB = 1 << 30
CHUNK = agent_backups.CHUNK_SIZE


class SparseFiles:
    """The bytes of each volume as a sparse file, what a backend's ``read_view`` gives a backup."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.raw"

    def write(self, volume_id: str, offset: int, data: bytes) -> None:
        with open(self.path(volume_id), "r+b") as f:
            f.seek(offset)
            f.write(data)

    @contextlib.contextmanager
    def read_view(self, *, volume_id: str | None = None, snapshot_id: str | None = None):
        yield self.path(volume_id)


@pytest.fixture
def storage(tmp_path):
    """The fake storage host, whose backups are made by the agent's real backup code."""
    driver = FakeVolumeDriver(hostname="node1")
    files = SparseFiles(tmp_path / "volumes")
    files.root.mkdir()
    store = agent_backups.DirectoryBackupStore(tmp_path / "backups")
    fake_create = driver.volume_create

    def volume_create(spec):
        answer = fake_create(spec)
        with open(files.path(spec.id), "wb") as f:
            f.truncate(spec.size_gb * GiB)
        return answer

    def backup_create(spec: BackupSpec):
        return agent_backups.backup_create(spec, files, store)

    driver.volume_create = volume_create
    driver.backup_create = backup_create
    driver.files = files
    reset_volume_driver(driver)
    yield driver
    reset_volume_driver()


def test_a_backup_records_the_chunks_the_storage_host_stored(world, host, storage):
    volume = fresh(services.volume_create(user=world.member, project=world.project, size=2, name="data"))
    for index in (0, 7, 300):  # three chunks of data in 2 GiB of holes
        storage.files.write(str(volume.pk), index * CHUNK, b"\x5a" * 4096)
    full = fresh(services.backup_create(volume=volume, user=world.member, name="full"))
    assert full.status == BackupStatus.AVAILABLE
    assert (full.size, full.object_count) == (2, 3)

    # An incremental one stores only the chunk that changed since.
    storage.files.write(str(volume.pk), 7 * CHUNK, b"\xa5" * 4096)
    incremental = fresh(services.backup_create(volume=fresh(volume), user=world.member, incremental=True))
    assert incremental.parent_id == full.pk and incremental.object_count == 1

    # Cinder's backup body says so.
    api = client(world.token(world.member))
    body = api.get(f"{base(world.project)}/backups/{incremental.pk}").json()["backup"]
    assert (body["size"], body["object_count"], body["is_incremental"]) == (2, 1, True)
    listed = {b["id"]: b for b in api.get(f"{base(world.project)}/backups/detail").json()["backups"]}
    assert listed[str(full.pk)]["object_count"] == 3


def test_a_backup_records_the_size_the_storage_host_read_in_whole_gib(world, host, storage):
    """The storage host read more than the record says (1 GiB and one chunk): the backup's size is
    what a restore into a new volume needs to hold every byte, 2 GiB."""
    volume = fresh(services.volume_create(user=world.member, project=world.project, size=1, name="odd"))
    storage.files.write(str(volume.pk), GiB, b"tail")  # past the end: the file grows by a chunk's worth
    with open(storage.files.path(str(volume.pk)), "r+b") as f:
        f.truncate(GiB + CHUNK)
    backup = fresh(services.backup_create(volume=volume, user=world.member))
    assert backup.status == BackupStatus.AVAILABLE and (backup.size, backup.object_count) == (2, 1)


def test_a_result_without_measures_keeps_the_record(world, host, storage):
    volume = fresh(services.volume_create(user=world.member, project=world.project, size=1))
    storage.backup_create = lambda spec: {"size": "1 GiB", "object_count": -1}
    backup = fresh(services.backup_create(volume=volume, user=world.member))
    assert backup.status == BackupStatus.AVAILABLE and (backup.size, backup.object_count) == (1, 0)
    assert Backup.objects.count() == 1


def test_a_backup_of_a_snapshot_is_recorded_with_the_snapshots_size(world, host, storage):
    """As Cinder: the volume grew since the snapshot; the backup is of the snapshot's 1 GiB."""
    volume = fresh(services.volume_create(user=world.member, project=world.project, size=1))
    snapshot = fresh(services.snapshot_create(volume=volume, user=world.member))
    services.volume_extend(volume=fresh(volume), user=world.member, new_size=2)
    assert fresh(volume).size == 2
    storage.backup_create = lambda spec: {}  # nothing measured: the record stands
    backup = fresh(services.backup_create(volume=fresh(volume), user=world.member, snapshot=snapshot))
    assert backup.status == BackupStatus.AVAILABLE and backup.size == 1
