"""The volume page's polled overview carries what its action forms depend on (may the volume be
attached now, its status and size), so that a page drawn while the volume was busy enables Attach
once it is available, without a reload (the page's script applies it; tests/e2e/test_portal_volumes.py
checks that part in a browser)."""

import re

import pytest
from django.test import Client

from agents.storage.volumes import reset_volume_driver
from agents.storage.volumes.fake import FakeVolumeDriver
from apps.volumes import services
from apps.volumes.models import Volume
from apps.volumes.states import VolumeStatus
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def storage():
    reset_volume_driver(FakeVolumeDriver(hostname="node1"))
    yield
    reset_volume_driver()


def facts(client: Client, volume: Volume) -> dict[str, str]:
    resp = client.get(f"/volumes/{volume.pk}/overview/")
    assert resp.status_code == 200
    tag = re.search(r'<dl [^>]*id="volume-facts"[^>]*>', resp.content.decode()).group(0)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag))


def test_the_overview_says_when_the_volume_may_be_attached(world):
    make_host("node1")
    client = Client()
    client.force_login(world.member)
    volume = services.volume_create(user=world.member, project=world.project, size=3)
    Volume.objects.filter(pk=volume.pk).update(status=VolumeStatus.CREATING)
    assert facts(client, volume) == {"status": "creating", "size": "3", "can-attach": "false"}
    Volume.objects.filter(pk=volume.pk).update(status=VolumeStatus.AVAILABLE)
    assert facts(client, volume)["can-attach"] == "true"
    Volume.objects.filter(pk=volume.pk).update(status=VolumeStatus.IN_USE)
    assert facts(client, volume) == {"status": "in-use", "size": "3", "can-attach": "false"}
    Volume.objects.filter(pk=volume.pk).update(multiattach=True)
    assert facts(client, volume)["can-attach"] == "true"
    # The page drawn now has the script that applies them to its forms.
    page = client.get(f"/volumes/{volume.pk}/").content.decode()
    assert 'id="attach-button"' in page and "facts.dataset.canAttach" in page
