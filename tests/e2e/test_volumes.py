"""Volumes on a running cloud with the real agents (file backend, libvirt hot-plug, TCG guests),
driven by the real python-openstackclient where the issue names a command, and by the APIs
elsewhere. The guests are the test VM: a root shell on the serial console that the test types
into through the domain's pty, reading the answers back from the console log.

One story, in order (the tests share the guests and the volumes): a 1 GiB volume attached to a
running guest is a 1 GiB virtio disk there; a marker written through the guest survives a detach
and an attach to a second guest, a snapshot (and the volume made from it), and a backup, the
volume's deletion and a restore; an attached volume grows and its guest sees the new size; a
server boots from a volume made from an image; servers shelved and unshelved keep their volumes;
the server booted from a volume resizes, and an image of it boots a copy; a server's deletion
keeps or deletes its volumes as asked; a create that fails on the storage host ends in error
with the reason, leaving no file."""

import json
import os
import re
import secrets
import subprocess
import time

import libvirt
import pytest

from agents.names import domain_name
from tests.e2e.test_compute_actions import MARKER, Server, domain_exists, mem_kb
from tests.e2e.test_openstack_cli import openstack

SLOW = 180  # TCG on two shared cores, four guests at once
SECTORS_PER_GIB = 2 * 1024 * 1024
pytestmark = pytest.mark.timeout(600)


def volume_api(story, method, path, body=None, version="3.42"):
    return story["cloud"].request(method, f"/volume/v3/{story['project']}{path}", body, story["token"],
                                  headers={"OpenStack-API-Version": f"volume {version}"})


def show(story, kind: str, object_id: str):
    """The object's body through the API (polling with the CLI would start a process each time),
    or None once it is gone."""
    resp = volume_api(story, "GET", f"/{kind}s/{object_id}")
    return resp.body[kind] if resp.status == 200 else None


def wait_for(story, kind: str, object_id: str, status: str | None) -> dict | None:
    """Until the volume (snapshot, backup) has ``status``, or is gone (``None``)."""
    def done():
        body = show(story, kind, object_id)
        if status is None:
            return body is None
        assert body is not None and not body["status"].startswith("error"), body
        return body["status"] == status and body
    return story["cloud"].wait_for(done, SLOW, interval=0.5, what=f"{kind} {object_id} to be {status or 'gone'}")


class Guest(Server):
    """A server whose serial console the test types into."""

    def show(self):
        # 2.3: volumes_attached has delete_on_termination.
        return self.cloud.request("GET", f"/compute/v2.1/servers/{self.id}", token=self.token,
                                  headers={"OpenStack-API-Version": "compute 2.3"})

    def type(self, command: str) -> None:
        conn = libvirt.open("qemu:///system")
        try:
            xml = conn.lookupByName(domain_name(self.id)).XMLDesc()
        finally:
            conn.close()
        pty = re.search(r"<console type='pty'[^>]*>\s*<source path='([^']+)'", xml).group(1)
        fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        try:
            time.sleep(1.2)  # QEMU reads a pty only once it has seen it connected (polled about once a second)
            os.write(fd, (command + "\n").encode())
            time.sleep(0.3)
        finally:
            os.close(fd)

    def run(self, command: str, timeout: float = 90) -> str:
        """``command``'s output (one line) in the guest. The tag is split by quotes in what is
        typed, so only the output matches (the console echoes the typed line)."""
        tag = secrets.token_hex(3)
        self.type(f'echo "Q""{tag}:$({command}):Q"')
        pattern = re.compile(rf"Q{tag}:(.*?):Q")
        found = self.cloud.wait_for(lambda: pattern.search(self.console()), timeout, interval=1,
                                    what=f"the guest's answer to {command!r}")
        return found.group(1).strip()

    def device_of(self, volume_id: str) -> str:
        """The guest's disk whose virtio serial is the volume's id (its first 20 characters)."""
        serial = volume_id[:20]
        return self.run(f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {serial} ] && echo ${{d##*/}}; done")

    def wait_disk(self, volume_id: str, timeout: float = 60) -> str:
        return self.cloud.wait_for(lambda: self.device_of(volume_id), timeout, interval=0.5,
                                   what=f"volume {volume_id} in the guest")

    def wait_no_disk(self, volume_id: str, timeout: float = 60) -> None:
        self.cloud.wait_for(lambda: not self.device_of(volume_id), timeout, interval=0.5,
                            what=f"volume {volume_id} to leave the guest")


def boot(cloud, token, name, **extra) -> Guest:
    body = {"server": {"name": name, "imageRef": "testvm", "flavorRef": "m1.nano", **extra}}
    resp = cloud.request("POST", "/compute/v2.1/servers", body, token)
    assert resp.status == 202, resp.body
    return Guest(cloud, token, resp.body["server"]["id"])


@pytest.fixture(scope="module")
def story(live_cloud):
    """Three guests booting at once while nothing else runs: A; B, with a blank second volume
    from block_device_mapping_v2 that its deletion keeps; and a server booted from a volume made
    from the image, which its deletion deletes."""
    cloud = live_cloud
    token = cloud.token()
    suffix = secrets.token_hex(2)
    image_id = cloud.request("GET", "/image/v2/images?name=testvm", token=token).body["images"][0]["id"]
    blank = {"block_device_mapping_v2": [{"boot_index": None, "source_type": "blank", "destination_type": "volume",
                                          "volume_size": 1, "delete_on_termination": False}]}
    from_volume = {"imageRef": "", "block_device_mapping_v2": [
        {"boot_index": 0, "source_type": "image", "destination_type": "volume", "uuid": image_id, "volume_size": 1,
         "delete_on_termination": True}]}
    project = cloud.request("GET", "/identity/v3/auth/tokens", token=token,
                            headers={"X-Subject-Token": token}).body["token"]["project"]["id"]
    state = {
        "cloud": cloud, "token": token, "project": project, "suffix": suffix, "image_id": image_id,
        "marker": f"VOLMARK-{secrets.token_hex(4)}",
        "a": boot(cloud, token, f"vol-a-{suffix}"), "b": boot(cloud, token, f"vol-b-{suffix}", **blank),
        "bfv": boot(cloud, token, f"bfv-{suffix}", **from_volume),
    }
    for name in ("a", "b"):
        body = state[name].wait_status("ACTIVE", SLOW)
        state[name].wait_console(lambda out: MARKER in out and "testvm#" in out[out.rfind(MARKER):],
                                 "the boot marker and the shell prompt", SLOW)
    (state["blank"],) = [v["id"] for v in body["os-extended-volumes:volumes_attached"]]  # B's
    yield state
    for name in ("a", "b", "bfv"):
        if state[name].show().status == 200:
            cloud.request("DELETE", f"/compute/v2.1/servers/{state[name].id}", token=token)


def test_a_volume_attached_to_a_running_guest_is_a_new_virtio_disk_of_its_size(story):
    cloud, a = story["cloud"], story["a"]
    volume = openstack(cloud, "volume", "create", "--size", "1", f"data-{story['suffix']}", "-f", "json")
    assert volume["size"] == 1
    wait_for(story, "volume", volume["id"], "available")
    attached = openstack(cloud, "server", "add", "volume", a.id, volume["id"], "-f", "json")
    assert attached["Device"] == "/dev/vdb"
    wait_for(story, "volume", volume["id"], "in-use")
    device = a.wait_disk(volume["id"])
    assert a.run(f"cat /sys/block/{device}/size") == str(SECTORS_PER_GIB)
    assert a.run(f"printf {story['marker']} > /dev/{device} && sync && echo written") == "written"
    story.update(volume=volume["id"], device=device)


def test_deleting_an_attached_volume_is_refused(story):
    result = openstack(story["cloud"], "volume", "delete", story["volume"], check=False)
    assert result.returncode != 0 and "400" in result.stderr and "attached" in result.stderr
    assert show(story, "volume", story["volume"])["status"] == "in-use"


def test_an_attached_volume_grows_and_its_guest_sees_the_new_size(story):
    cloud, a = story["cloud"], story["a"]
    openstack(cloud, "volume", "set", "--size", "2", story["volume"])
    assert wait_for(story, "volume", story["volume"], "in-use")["size"] == 2
    cloud.wait_for(lambda: a.run(f"cat /sys/block/{story['device']}/size") == str(2 * SECTORS_PER_GIB), 60,
                   interval=1, what="the guest to see 2 GiB")


def test_a_snapshot_of_the_attached_volume_and_a_volume_made_from_it_hold_the_marker(story):
    cloud = story["cloud"]
    snapshot = openstack(cloud, "volume", "snapshot", "create", "--volume", story["volume"], "--force",
                         f"snap-{story['suffix']}", "-f", "json")
    wait_for(story, "snapshot", snapshot["id"], "available")
    clone = openstack(cloud, "volume", "create", "--snapshot", snapshot["id"], f"fromsnap-{story['suffix']}",
                      "-f", "json")
    assert wait_for(story, "volume", clone["id"], "available")["size"] == 2
    story.update(snapshot=snapshot["id"], clone=clone["id"])


def test_detached_and_attached_to_a_second_guest_the_marker_is_there(story):
    cloud, a, b = story["cloud"], story["a"], story["b"]
    openstack(cloud, "server", "remove", "volume", a.id, story["volume"])
    wait_for(story, "volume", story["volume"], "available")
    a.wait_no_disk(story["volume"])
    openstack(cloud, "server", "add", "volume", b.id, story["volume"], "-f", "json")
    device = b.wait_disk(story["volume"])
    assert b.run(f"head -c {len(story['marker'])} /dev/{device}") == story["marker"]
    # The volume made from the snapshot, on the first guest (through Cinder's attachments API).
    resp = volume_api(story, "POST", "/attachments",
                      {"attachment": {"volume_uuid": story["clone"], "instance_uuid": a.id}})
    assert resp.status == 200, resp.body
    clone_device = a.wait_disk(story["clone"])
    assert a.run(f"head -c {len(story['marker'])} /dev/{clone_device}") == story["marker"]


def test_backup_delete_restore_and_the_marker_is_there(story):
    cloud, b = story["cloud"], story["b"]
    backup = openstack(cloud, "volume", "backup", "create", "--force", "--name", f"backup-{story['suffix']}",
                       story["volume"], "-f", "json")
    wait_for(story, "backup", backup["id"], "available")
    wait_for(story, "volume", story["volume"], "in-use")
    openstack(cloud, "server", "remove", "volume", b.id, story["volume"])
    wait_for(story, "volume", story["volume"], "available")
    b.wait_no_disk(story["volume"])
    openstack(cloud, "volume", "delete", "--purge", story["volume"])  # with its snapshot
    wait_for(story, "volume", story["volume"], None)
    restored = openstack(cloud, "volume", "backup", "restore", backup["id"], f"restored-{story['suffix']}",
                         "-f", "json")
    assert wait_for(story, "volume", restored["volume_id"], "available")["size"] == 2
    openstack(cloud, "server", "add", "volume", b.id, restored["volume_id"], "-f", "json")
    device = b.wait_disk(restored["volume_id"])
    assert b.run(f"head -c {len(story['marker'])} /dev/{device}") == story["marker"]
    story["restored"] = restored["volume_id"]


def test_a_volume_made_from_an_image_is_bootable(story):
    volume = openstack(story["cloud"], "volume", "create", "--image", "testvm", "--size", "1",
                       f"img-{story['suffix']}", "-f", "json")
    shown = wait_for(story, "volume", volume["id"], "available")
    assert shown["bootable"] == "true" and shown["volume_image_metadata"]["image_name"] == "testvm"


def test_shelved_servers_keep_their_volumes_and_find_them_again_when_unshelved(story):
    """B (its root disk uploaded; two volumes) and the server booted from a volume (nothing to
    upload) leave the host. While B is shelved a volume is detached from it and attached again
    (compute 2.20, through the CLI); unshelved, the volumes are its disks again and the marker is
    there."""
    cloud, b, bfv = story["cloud"], story["b"], story["bfv"]
    bfv.wait_status("ACTIVE", SLOW)
    bfv.wait_booted()
    for server in (b, bfv):
        openstack(cloud, "server", "shelve", server.id)
    for server in (b, bfv):
        assert server.wait_status("SHELVED_OFFLOADED", SLOW)["OS-EXT-SRV-ATTR:host"] is None
        assert not domain_exists(server.id)
    images = {i["Name"] for i in openstack(cloud, "image", "list", "-f", "json")}
    assert f"vol-b-{story['suffix']}-shelved" in images and f"bfv-{story['suffix']}-shelved" not in images
    assert show(story, "volume", story["restored"])["status"] == "in-use"

    openstack(cloud, "server", "remove", "volume", b.id, story["blank"])
    assert wait_for(story, "volume", story["blank"], "available")
    openstack(cloud, "server", "add", "volume", b.id, story["blank"], "-f", "json")
    assert wait_for(story, "volume", story["blank"], "in-use")

    for server in (b, bfv):
        openstack(cloud, "server", "unshelve", server.id)
    for server in (b, bfv):
        server.wait_status("ACTIVE", SLOW)
        server.wait_booted()
    device = b.wait_disk(story["restored"])
    assert b.run(f"head -c {len(story['marker'])} /dev/{device}") == story["marker"]
    assert b.wait_disk(story["blank"])
    attached = {v["id"] for v in b.show().body["server"]["os-extended-volumes:volumes_attached"]}
    assert attached == {story["restored"], story["blank"]}


def test_a_server_booted_from_a_volume_resizes_and_its_guest_sees_the_new_ram(story):
    bfv = story["bfv"]
    before = 128 * 1024  # m1.nano: the guest sees less than 128 MiB
    bfv.action({"resize": {"flavorRef": "m1.micro"}})  # 128 -> 192 MiB, its disk still the volume
    assert bfv.wait_status("VERIFY_RESIZE", SLOW)["flavor"]["id"] == "84"
    bfv.wait_console(lambda out: (mem_kb(out) or 0) > before, "more memory in the guest", SLOW)
    bfv.action({"confirmResize": None}, expect=204)
    bfv.wait_status("ACTIVE", SLOW)


def test_a_server_booted_from_a_volume_rebuilds_on_its_volume(story):
    """Nova before 2.93: the guest is made afresh on the same volume (not reimaged), with the
    image the volume was made from; it boots from the volume again."""
    bfv = story["bfv"]
    attached = bfv.show().body["server"]["os-extended-volumes:volumes_attached"]
    bfv.wait_booted()
    bfv.action({"rebuild": {"imageRef": story["image_id"], "name": f"bfv-rebuilt-{story['suffix']}"}})
    body = bfv.wait_status("ACTIVE", SLOW)
    assert (body["name"], body["image"]) == (f"bfv-rebuilt-{story['suffix']}", "")
    assert body["os-extended-volumes:volumes_attached"] == attached
    bfv.wait_booted()
    actions = story["cloud"].request("GET", f"/compute/v2.1/servers/{bfv.id}/os-instance-actions",
                                     token=story["token"]).body["instanceActions"]
    assert (actions[0]["action"], actions[0]["message"]) == ("rebuild", None)


def test_an_image_of_the_server_booted_from_a_volume_boots_a_copy(story):
    """createImage of a volume-backed server: snapshots of its volume behind an image without data;
    a server booted from that image boots from a volume made from the snapshot."""
    cloud, bfv, suffix = story["cloud"], story["bfv"], story["suffix"]
    name = f"bfv-image-{suffix}"
    openstack(cloud, "server", "image", "create", "--wait", "--name", name, bfv.id, "-f", "json")
    image = openstack(cloud, "image", "show", name, "-f", "json")
    assert image["status"] == "active" and int(image["size"]) == 0
    (mapping,) = json.loads(image["properties"]["block_device_mapping"])
    assert mapping["boot_index"] == 0
    assert wait_for(story, "snapshot", mapping["snapshot_id"], "available")
    copy = boot(cloud, story["token"], f"copy-{suffix}", imageRef=image["id"])
    body = copy.wait_status("ACTIVE", SLOW)
    copy.wait_booted()
    (volume,) = body["os-extended-volumes:volumes_attached"]
    assert show(story, "volume", volume["id"])["snapshot_id"] == mapping["snapshot_id"]
    copy.delete()
    wait_for(story, "volume", volume["id"], None)  # delete_on_termination, as the original's
    openstack(cloud, "image", "delete", image["id"])
    openstack(cloud, "volume", "snapshot", "delete", mapping["snapshot_id"])
    wait_for(story, "snapshot", mapping["snapshot_id"], None)


def test_a_server_boots_from_a_volume_and_deleting_servers_keeps_or_deletes_their_volumes(story):
    cloud, bfv, b = story["cloud"], story["bfv"], story["b"]
    body = bfv.wait_status("ACTIVE", SLOW)
    assert body["image"] == ""
    bfv.wait_console(lambda out: MARKER in out, "the guest to boot from its volume", SLOW)
    (boot_volume,) = body["os-extended-volumes:volumes_attached"]
    assert boot_volume["delete_on_termination"] is True
    assert wait_for(story, "volume", boot_volume["id"], "in-use")["bootable"] == "true"
    assert show(story, "volume", story["blank"])["status"] == "in-use"
    bfv.delete()
    b.delete()
    wait_for(story, "volume", boot_volume["id"], None)  # deleted with its server
    assert not list((cloud.data_dir / "volumes").glob(f"*{boot_volume['id']}*"))
    assert wait_for(story, "volume", story["blank"], "available")  # kept


def test_a_create_that_fails_on_the_storage_host_ends_in_error_with_the_reason(story, tmp_path):
    """The fault: an image whose stored bytes were damaged after upload. The storage host's
    download fails its checksum halfway through the create."""
    cloud = story["cloud"]
    source = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "16M"], check=True)
    image = openstack(cloud, "image", "create", "--disk-format", "qcow2", "--container-format", "bare", "--file",
                      str(source), f"damaged-{story['suffix']}", "-f", "json")
    with open(cloud.data_dir / "images" / image["id"], "r+b") as stored:
        stored.seek(70000)
        stored.write(b"damaged")
    volume = openstack(cloud, "volume", "create", "--image", image["id"], "--size", "1",
                       f"broken-{story['suffix']}", "-f", "json")
    cloud.wait_for(lambda: show(story, "volume", volume["id"])["status"] == "error", SLOW, interval=0.5,
                   what="the volume to be in error")
    messages = volume_api(story, "GET", f"/messages?resource_uuid={volume['id']}").body["messages"]
    assert "checksum" in messages[0]["user_message"], messages
    assert not list((cloud.data_dir / "volumes").glob(f"*{volume['id']}*"))  # no stray file
    openstack(cloud, "volume", "delete", volume["id"])
    wait_for(story, "volume", volume["id"], None)
