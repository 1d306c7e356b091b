"""Real VMs, booted through a running cloud: the API and the management command."""

import re

import libvirt
import pytest

from agents.names import domain_name

MARKER = "CLOUDMGR_TESTVM_BOOTED"


def domain_exists(instance_id: str) -> bool:
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(domain_name(instance_id))
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def console(cloud, token, server_id) -> str:
    resp = cloud.request("POST", f"/compute/v2.1/servers/{server_id}/action", {"os-getConsoleOutput": {}}, token)
    assert resp.status == 200, resp.body
    return resp.body["output"]


def server(cloud, token, server_id):
    return cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=token)


def wait_deleted(cloud, token, server_id):
    cloud.wait_for(lambda: server(cloud, token, server_id).status == 404, 60, what="the server to be gone")
    assert not domain_exists(server_id)
    assert not (cloud.data_dir / "instances" / server_id).exists()


def test_api_boots_a_real_vm_and_deletes_it(api):
    cloud, token = api
    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": "api-vm", "imageRef": "testvm", "flavorRef": "m1.nano"}}, token)
    assert resp.status == 202, resp.body
    server_id = resp.body["server"]["id"]

    def active():
        body = server(cloud, token, server_id).body["server"]
        assert body["status"] != "ERROR", body.get("fault")
        return body["status"] == "ACTIVE" and body["OS-EXT-STS:task_state"] is None

    cloud.wait_for(active, 60, what="ACTIVE")
    assert domain_exists(server_id)
    cloud.wait_for(lambda: MARKER in console(cloud, token, server_id), 90, interval=1, what="the boot marker")
    mem = cloud.wait_for(lambda: re.search(r"CLOUDMGR_TESTVM_MEM_KB=(\d+)", console(cloud, token, server_id)), 30,
                         what="the memory marker")
    mem_kb = int(mem.group(1))
    assert 64 * 1024 < mem_kb <= 128 * 1024  # the flavor's 128 MiB, less what the kernel keeps

    assert cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token).status == 204
    wait_deleted(cloud, token, server_id)


def test_command_boots_a_real_vm_and_deletes_it(live_cloud):
    cloud = live_cloud
    out = cloud.manage("instance_create", "cmd-vm", "--flavor", "m1.nano", "--image", "testvm", "--wait").stdout
    server_id = re.search(r"cmd-vm ([0-9a-f-]{36}) ACTIVE", out).group(1)
    cloud.wait_for(lambda: MARKER in cloud.manage("instance_console_log", server_id).stdout, 90, interval=1,
                   what="the boot marker")
    assert server_id in cloud.manage("instance_list").stdout
    cloud.manage("instance_delete", server_id)
    wait_deleted(cloud, cloud.token(), server_id)


def test_delete_right_after_create_leaves_nothing_behind(api):
    cloud, token = api
    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": "short-lived", "imageRef": "testvm", "flavorRef": "m1.nano"}}, token)
    server_id = resp.body["server"]["id"]
    assert cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token).status == 204
    wait_deleted(cloud, token, server_id)


def test_unknown_flavor_or_image_is_a_clear_4xx(api):
    cloud, token = api
    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": "x", "imageRef": "testvm", "flavorRef": "m9.huge"}}, token)
    assert resp.status == 404
    assert "m9.huge" in resp.body["itemNotFound"]["message"]


@pytest.mark.parametrize("path", ["/compute/v2.1/servers", "/compute/v2.1/flavors"])
def test_api_without_token_is_401(live_cloud, path):
    assert live_cloud.request("GET", path).status == 401
