"""Lifecycle actions on real TCG VMs through a running cloud's Nova API."""

import json
import re
import subprocess

import libvirt
import pytest

from agents.names import domain_name
from tests.e2e.test_openstack_cli import openstack

MARKER = "CLOUDMGR_TESTVM_BOOTED"
SHUTDOWN_MARKER = "CLOUDMGR_TESTVM_SHUTDOWN"
SLOW = 120  # TCG on two cores: generous


def dom_info(server_id):
    """(libvirt state, domain id or -1, has managed save) of the server's domain."""
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(domain_name(server_id))
        return dom.state()[0], dom.ID(), bool(dom.hasManagedSaveImage(0))
    finally:
        conn.close()


def domain_exists(server_id) -> bool:
    try:
        dom_info(server_id)
        return True
    except libvirt.libvirtError:
        return False


class Server:
    def __init__(self, cloud, token, server_id):
        self.cloud, self.token, self.id = cloud, token, server_id

    def show(self):
        resp = self.cloud.request("GET", f"/compute/v2.1/servers/{self.id}", token=self.token)
        return resp

    def action(self, body, expect=202):
        resp = self.cloud.request("POST", f"/compute/v2.1/servers/{self.id}/action", body, self.token)
        assert resp.status == expect, resp.body
        return resp

    def console(self) -> str:
        return self.action({"os-getConsoleOutput": {}}, expect=200).body["output"]

    def wait_status(self, status, timeout=SLOW):
        def done():
            body = self.show().body["server"]
            assert body["status"] != "ERROR", body.get("fault")
            return body["status"] == status and body["OS-EXT-STS:task_state"] is None and body
        return self.cloud.wait_for(done, timeout, interval=0.5, what=f"{self.id} to be {status}")

    def wait_console(self, predicate, what, timeout=SLOW):
        return self.cloud.wait_for(lambda: predicate(self.console()), timeout, interval=1, what=what)

    def wait_booted(self, times=1):
        """Until the guest booted ``times`` times (in this console log) and its init finished
        (the shell prompt comes after acpid starts: the power button works from then on)."""
        def ready(out):
            return out.count(MARKER) >= times and "testvm#" in out[out.rfind(MARKER):]
        self.wait_console(ready, f"boot marker x{times} and the shell prompt")

    def delete(self):
        assert self.cloud.request("DELETE", f"/compute/v2.1/servers/{self.id}", token=self.token).status == 204
        self.cloud.wait_for(lambda: self.show().status == 404, SLOW, interval=0.5, what="the server to be gone")
        assert not domain_exists(self.id)
        assert not (self.cloud.data_dir / "instances" / self.id).exists()


def boot(cloud, token, name, flavor="m1.nano") -> Server:
    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": name, "imageRef": "testvm", "flavorRef": flavor}}, token)
    assert resp.status == 202, resp.body
    return Server(cloud, token, resp.body["server"]["id"])


def mem_kb(output: str) -> int | None:
    found = re.findall(r"CLOUDMGR_TESTVM_MEM_KB=(\d+)", output)
    return int(found[-1]) if found else None


@pytest.fixture(scope="module")
def vm(live_cloud):
    cloud = live_cloud
    server = boot(cloud, cloud.token(), "actions-vm")
    server.wait_status("ACTIVE")
    server.wait_booted()
    yield server
    if server.show().status == 200:
        server.delete()


def test_stop_is_a_clean_acpi_shutdown_and_start_boots_again(vm):
    vm.action({"os-stop": None})
    body = vm.wait_status("SHUTOFF")
    assert body["OS-EXT-STS:power_state"] == 4
    assert dom_info(vm.id)[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert SHUTDOWN_MARKER in vm.console()  # the guest powered off cleanly
    conflict = vm.action({"os-stop": None}, expect=409)
    assert "stopped" in conflict.body["conflictingRequest"]["message"]
    vm.action({"os-start": None})
    body = vm.wait_status("ACTIVE")
    assert body["OS-EXT-STS:power_state"] == 1
    vm.wait_booted()


def test_soft_reboot_restarts_the_guest(vm):
    before = dom_info(vm.id)[1]
    vm.action({"reboot": {"type": "SOFT"}})
    vm.wait_status("ACTIVE")
    state, after, _ = dom_info(vm.id)
    assert state == libvirt.VIR_DOMAIN_RUNNING and after != before  # a new qemu process
    vm.wait_booted()


def test_hard_reboot_resets_the_guest(vm):
    booted = vm.console().count(MARKER)
    vm.action({"reboot": {"type": "HARD"}})
    vm.wait_status("ACTIVE")
    vm.wait_booted(times=booted + 1)  # reset: same log, one more boot


def test_diagnostics_count_the_running_guest(vm):
    """An admin's GET /servers/{id}/diagnostics: libvirt's counters under Nova's names."""
    resp = vm.cloud.request("GET", f"/compute/v2.1/servers/{vm.id}/diagnostics", token=vm.token)
    assert resp.status == 200, resp.body
    body = resp.body
    assert body["cpu0_time"] > 0 and body["vda_read"] > 0 and body["vda_read_req"] > 0
    assert body["memory"] == 128 * 1024 and body["memory-actual"] == 128 * 1024
    taps = [key[:-3] for key in body if key.endswith("_rx")]
    assert all(body[f"{tap}_tx_packets"] >= 0 for tap in taps)


def test_trigger_crash_dump_sends_the_guest_an_nmi(vm):
    resp = vm.cloud.request("POST", f"/compute/v2.1/servers/{vm.id}/action", {"trigger_crash_dump": None}, vm.token,
                            headers={"OpenStack-API-Version": "compute 2.17"})
    assert resp.status == 202, resp.body
    vm.wait_console(lambda out: "NMI received" in out, "the guest kernel to log the NMI")
    body = vm.wait_status("ACTIVE")  # the guest goes on: its kernel only logs an unknown NMI
    assert body["OS-EXT-STS:power_state"] == 1


def test_pause_and_unpause(vm):
    vm.action({"pause": None})
    assert vm.wait_status("PAUSED")["OS-EXT-STS:power_state"] == 3
    assert dom_info(vm.id)[0] == libvirt.VIR_DOMAIN_PAUSED
    vm.action({"unpause": None})
    vm.wait_status("ACTIVE")
    assert dom_info(vm.id)[0] == libvirt.VIR_DOMAIN_RUNNING


def test_suspend_and_resume(vm):
    vm.action({"suspend": None})
    vm.wait_status("SUSPENDED")
    state, _, saved = dom_info(vm.id)
    assert state == libvirt.VIR_DOMAIN_SHUTOFF and saved
    vm.action({"resume": None})
    vm.wait_status("ACTIVE")
    state, _, saved = dom_info(vm.id)
    assert state == libvirt.VIR_DOMAIN_RUNNING and not saved


def test_resize_and_confirm_the_guest_sees_the_new_ram(vm):
    before = 128 * 1024  # m1.nano: the guest sees less than 128 MiB (~94780 kB)
    vm.action({"resize": {"flavorRef": "m1.micro"}})  # 128 -> 192 MiB
    body = vm.wait_status("VERIFY_RESIZE")
    assert body["flavor"]["id"] == "84"
    after = mem_kb(vm.wait_console(lambda out: (mem_kb(out) or 0) > before and out, "more memory in the guest"))
    assert after > before  # m1.micro's 192 MiB (~160000 kB)
    vm.action({"confirmResize": None}, expect=204)
    vm.wait_status("ACTIVE")


def guest_disks(output: str) -> dict[str, int] | None:
    """The last boot's virtio disks, {device: bytes}, from its CLOUDMGR_TESTVM_DISKS marker."""
    found = re.findall(r"CLOUDMGR_TESTVM_DISKS=([^\r\n]*)", output)
    if not found:
        return None
    return {dev: int(sectors) * 512 for dev, sectors in (item.split(":") for item in found[-1].split())}


def backing_file(path) -> str:
    info = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], check=True, capture_output=True,
                          text=True)
    return json.loads(info.stdout)["full-backing-filename"]


def filesystem(path) -> dict[str, str]:
    found = subprocess.run(["blkid", "-p", "-o", "export", path], check=True, capture_output=True, text=True)
    return dict(line.split("=", 1) for line in found.stdout.split())


def test_a_flavors_ephemeral_and_swap_disks_reach_the_guest_and_follow_a_resize(live_cloud):
    cloud, token = live_cloud, live_cloud.token()
    for flavor_id, ephemeral, swap in (("eph.1", 1, 64), ("eph.2", 2, 128)):
        resp = cloud.request("POST", "/compute/v2.1/flavors", {"flavor": {
            "name": flavor_id, "id": flavor_id, "vcpus": 1, "ram": 128, "disk": 1,
            "OS-FLV-EXT-DATA:ephemeral": ephemeral, "swap": swap}}, token)
        assert resp.status == 200, resp.body
    server = boot(cloud, token, "ephemeral-vm", flavor="eph.1")
    server.wait_status("ACTIVE")
    server.wait_booted()
    disks = guest_disks(server.console())
    assert (disks["vdb"], disks["vdc"]) == (1 << 30, 64 << 20) and set(disks) == {"vda", "vdb", "vdc"}
    # On the host: each is an overlay on a base formatted once (ext4 labelled ephemeral0; swap).
    instance_dir = cloud.data_dir / "instances" / server.id
    ephemeral_base = backing_file(instance_dir / "disk.ephemeral0.qcow2")
    swap_base = backing_file(instance_dir / "disk.swap.qcow2")
    assert {k: filesystem(ephemeral_base)[k] for k in ("TYPE", "LABEL")} == {"TYPE": "ext4", "LABEL": "ephemeral0"}
    assert filesystem(swap_base)["TYPE"] == "swap"

    server.action({"resize": {"flavorRef": "eph.2"}})
    server.wait_status("VERIFY_RESIZE")
    # A new QEMU process: the console log holds the new boot only.
    disks = server.wait_console(lambda out: (guest_disks(out) or {}).get("vdb") != 1 << 30 and guest_disks(out),
                                "the guest's disks after the resize")
    assert (disks["vdb"], disks["vdc"]) == (2 << 30, 128 << 20)
    server.action({"confirmResize": None}, expect=204)
    server.wait_status("ACTIVE")
    server.delete()
    for flavor_id in ("eph.1", "eph.2"):
        assert cloud.request("DELETE", f"/compute/v2.1/flavors/{flavor_id}", token=token).status == 202


def test_rebuild_gives_a_fresh_root_disk(vm):
    resp = vm.action({"rebuild": {"imageRef": "testvm", "name": "rebuilt-vm"}})
    assert resp.body["server"]["id"] == vm.id
    body = vm.wait_status("ACTIVE")
    assert body["name"] == "rebuilt-vm"
    vm.wait_booted()


@pytest.mark.parametrize("action,status", [
    ({"os-stop": None}, "SHUTOFF"),
    ({"pause": None}, "PAUSED"),
    ({"suspend": None}, "SUSPENDED"),
    ({"resize": {"flavorRef": "m1.micro"}}, "VERIFY_RESIZE"),
])
def test_delete_from_every_state(live_cloud, action, status):
    server = boot(live_cloud, live_cloud.token(), f"delete-from-{status.lower()}")
    server.wait_status("ACTIVE")
    server.wait_booted()
    server.action(action)
    server.wait_status(status)
    server.delete()


def test_reconciler_sees_a_guest_that_powered_itself_off(live_cloud):
    server = boot(live_cloud, live_cloud.token(), "self-poweroff")
    server.wait_status("ACTIVE")
    server.wait_booted()
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(domain_name(server.id)).shutdown()  # as if the guest ran poweroff
    finally:
        conn.close()
    server.wait_status("SHUTOFF", timeout=SLOW)
    server.delete()


def test_create_image_then_boot_from_it(live_cloud):
    cloud, token = live_cloud, live_cloud.token()
    server = boot(cloud, token, "snap-source")
    server.wait_status("ACTIVE")
    server.wait_booted()
    resp = server.action({"createImage": {"name": "snap-of-vm"}})
    image_id = resp.headers["Location"].rsplit("/", 1)[1]

    def image_active():
        body = cloud.request("GET", f"/image/v2/images/{image_id}", token=token).body
        assert body["status"] not in ("killed", "deleted"), body
        return body["status"] == "active" and body
    image = cloud.wait_for(image_active, SLOW, interval=1, what="the snapshot to be active")
    assert image["disk_format"] == "qcow2" and image["size"] > 0
    server.wait_status("ACTIVE")  # the task state went back
    server.delete()

    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": "from-snap", "imageRef": image_id, "flavorRef": "m1.nano"}}, token)
    assert resp.status == 202, resp.body
    child2 = Server(cloud, token, resp.body["server"]["id"])
    child2.wait_status("ACTIVE")
    child2.wait_booted()
    child2.delete()


def novnc_handshake(cloud, url: str) -> bytes:
    """What noVNC does with a console URL: open the proxy's websocket with the URL's token and
    read until the VNC server's greeting (or the proxy hangs up)."""
    import base64
    import os
    import socket
    import time
    from urllib.parse import unquote, urlsplit

    token = unquote(url).split("token=")[1]
    host, port = "127.0.0.1", urlsplit(cloud.env["CLOUDMGR_CONSOLE_URL"]).port
    assert urlsplit(url).port == port

    def connect():
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            return None

    sock = cloud.wait_for(connect, 30, what="the console proxy")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: binary\r\n\r\n").encode())
    data = b""
    deadline = time.monotonic() + 20
    while b"RFB " not in data and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def test_novnc_console_websocket_handshake_and_rfb_greeting(live_cloud, vm):
    """Through the cloud's own console proxy (the Procfile's `console` process): a URL from the
    2.1 action, then one from the real CLI, which negotiates the maximum microversion and so
    asks POST /servers/{id}/remote-consoles (2.6)."""
    resp = vm.action({"os-getVNCConsole": {"type": "novnc"}}, expect=200)  # no header: 2.1
    url = resp.body["console"]["url"]
    data = novnc_handshake(live_cloud, url)
    assert data.startswith(b"HTTP/1.1 101"), data[:200]
    assert b"RFB 003.00" in data  # the VNC server's greeting, inside a websocket frame
    assert b"RFB " not in novnc_handshake(live_cloud, url)  # one-time: the second use is refused

    shown = openstack(live_cloud, "--debug", "console", "url", "show", vm.id, "-f", "json", check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"POST {live_cloud.url}/compute/v2.1/servers/{vm.id}/remote-consoles" in shown.stderr
    assert "OpenStack-API-Version: compute 2.28" in shown.stderr
    console = json.loads(shown.stdout)
    assert console["type"] == "novnc" and console["protocol"] == "vnc"
    data = novnc_handshake(live_cloud, console["url"])
    assert data.startswith(b"HTTP/1.1 101"), data[:200]
    assert b"RFB 003.00" in data
    assert b"RFB " not in novnc_handshake(live_cloud, console["url"])


def test_rescue_boots_a_rescue_system_with_the_disk_second_and_unrescue_returns(live_cloud):
    server = boot(live_cloud, live_cloud.token(), "rescue-me")
    server.wait_status("ACTIVE")
    server.wait_booted()
    assert "vdb:" not in server.console()
    assert server.action({"rescue": {}}, expect=200).body == {}
    server.wait_status("RESCUE")
    server.wait_booted()
    disks = re.findall(r"CLOUDMGR_TESTVM_DISKS=(.*)", server.console())[-1]
    assert "vda:" in disks and "vdb:" in disks  # the rescue disk boots, the instance's disk is second
    server.action({"unrescue": None})
    server.wait_status("ACTIVE")
    server.wait_booted()
    disks = re.findall(r"CLOUDMGR_TESTVM_DISKS=(.*)", server.console())[-1]
    assert "vdb:" not in disks
    assert not (live_cloud.data_dir / "instances" / server.id / "disk.rescue.qcow2").exists()
    server.delete()


def test_lifecycle_commands(live_cloud):
    cloud = live_cloud
    out = cloud.manage("instance_create", "cmd-actions", "--flavor", "m1.nano", "--image", "testvm", "--wait").stdout
    sid = re.search(r"cmd-actions ([0-9a-f-]{36}) ACTIVE", out).group(1)
    server = Server(cloud, cloud.token(), sid)
    server.wait_booted()
    assert "SHUTOFF" in cloud.manage("instance_stop", sid, "--wait").stdout
    assert "ACTIVE" in cloud.manage("instance_start", sid, "--wait").stdout
    server.wait_booted()  # a new QEMU: a new console log
    assert "ACTIVE" in cloud.manage("instance_reboot", sid, "--hard", "--wait").stdout
    # A reset (same QEMU, same log). The NMI below must find a booted kernel: one that comes
    # while the guest is still in its firmware or early boot is lost, and nothing is logged.
    server.wait_booted(times=2)
    assert "PAUSED" in cloud.manage("instance_pause", sid, "--wait").stdout
    assert "ACTIVE" in cloud.manage("instance_unpause", sid, "--wait").stdout
    assert "ACTIVE" in cloud.manage("instance_trigger_crash_dump", sid, "--wait").stdout
    server.wait_console(lambda out: "NMI received" in out, "the guest kernel to log the NMI")
    cloud.manage("instance_lock", sid)
    assert "SHUTOFF" in cloud.manage("instance_stop", sid, "--wait").stdout  # admins may act on locked ones
    cloud.manage("instance_start", sid, "--wait")
    cloud.manage("instance_unlock", sid)
    cloud.manage("instance_delete", sid)
    cloud.wait_for(lambda: server.show().status == 404, SLOW, what="the server to be gone")
