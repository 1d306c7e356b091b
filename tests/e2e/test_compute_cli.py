"""python-openstackclient 10.5 (unpinned: it negotiates the microversion we advertise) drives
the compute API of a running cloud, on real VMs."""

from tests.e2e import cli
from tests.e2e.test_openstack_cli import cli_env, openstack

MARKER = "CLOUDMGR_TESTVM_BOOTED"


def run(cloud, *args, timeout=300):
    result = cli.run(args, cli_env(cloud), timeout=timeout)
    assert result.returncode == 0, f"openstack {' '.join(args)} failed:\n{result.stderr}\n{result.stdout}"
    return result.stdout


def wait_ready(cloud, server_id):
    """The guest printed its boot marker and reached its shell (the power button works)."""
    def ready():
        out = cloud.console_output(server_id)
        return MARKER in out and "testvm#" in out[out.rfind(MARKER):]
    cloud.wait_for(ready, 120, interval=1, what="the guest to boot")


def status(cloud, server_id):
    """Polled through the API: the commands under test are the other `openstack` runs."""
    return cloud.server(server_id)["status"]


def test_flavor_list(live_cloud):
    flavors = {f["Name"]: f for f in openstack(live_cloud, "flavor", "list", "-f", "json")}
    assert {"m1.nano", "m1.micro"} <= set(flavors)
    assert flavors["m1.nano"]["RAM"] == 128
    # An admin's flavor with an ephemeral disk and swap (the guests' view of them: test_compute_actions.py).
    created = openstack(live_cloud, "flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1",
                        "--ephemeral", "1", "--swap", "64", "cli.eph", "-f", "json")
    shown = openstack(live_cloud, "flavor", "show", "cli.eph", "-f", "json")
    assert (created["OS-FLV-EXT-DATA:ephemeral"], shown["OS-FLV-EXT-DATA:ephemeral"], shown["swap"]) == (1, 1, 64)
    run(live_cloud, "flavor", "delete", "cli.eph")


def test_a_flavor_asks_for_hosts_by_their_aggregates_metadata(live_cloud):
    """aggregate_instance_extra_specs:KEY=VALUE (Nova's AggregateInstanceExtraSpecsFilter), set
    and met through the CLI on the cloud's one host."""
    cloud, hostname = live_cloud, live_cloud.env["CLOUDMGR_HOSTNAME"]
    openstack(cloud, "flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1",
              "--property", "aggregate_instance_extra_specs:disk=ssd", "cli.ssd", "-f", "json")
    refused = openstack(cloud, "server", "create", "--image", "testvm", "--flavor", "cli.ssd",
                        "--wait", "cli-no-ssd", "-f", "json", check=False)
    assert refused.returncode != 0, refused.stdout
    shown = openstack(cloud, "server", "show", "cli-no-ssd", "-f", "json")
    assert shown["status"] == "ERROR" and "No valid host" in shown["fault"]["message"]
    run(cloud, "server", "delete", "--wait", "cli-no-ssd")
    openstack(cloud, "aggregate", "create", "cli-ssd", "-f", "json")
    openstack(cloud, "aggregate", "add", "host", "cli-ssd", hostname, "-f", "json")
    openstack(cloud, "aggregate", "set", "--property", "disk=hdd,ssd", "cli-ssd")
    try:
        server = openstack(cloud, "server", "create", "--image", "testvm", "--flavor", "cli.ssd",
                           "--wait", "cli-ssd", "-f", "json")
        assert server["status"] == "ACTIVE"
        run(cloud, "server", "delete", "--wait", server["id"])
    finally:
        openstack(cloud, "aggregate", "remove", "host", "cli-ssd", hostname, "-f", "json")
        openstack(cloud, "aggregate", "delete", "cli-ssd")
        run(cloud, "flavor", "delete", "cli.ssd")


def test_keypair_create(live_cloud, tmp_path):
    key = tmp_path / "id"
    out = openstack(live_cloud, "keypair", "create", "--private-key", str(key), "cli-key", "-f", "json")
    assert out["name"] == "cli-key" and out["fingerprint"]
    assert "PRIVATE KEY" in key.read_text()
    assert "cli-key" in [k["Name"] for k in openstack(live_cloud, "keypair", "list", "-f", "json")]


def test_server_group_create_anti_affinity(live_cloud):
    out = openstack(live_cloud, "server", "group", "create", "--policy", "anti-affinity", "cli-group", "-f", "json")
    assert out["name"] == "cli-group"
    assert "anti-affinity" in str(out.get("policy") or out.get("policies"))
    openstack(live_cloud, "server", "group", "delete", "cli-group")


def test_server_group_create_soft_anti_affinity(live_cloud):
    # OSC asks for 2.15 before it sends a soft policy, and shows the group's owners from 2.13.
    out = openstack(live_cloud, "server", "group", "create", "--policy", "soft-anti-affinity", "cli-soft", "-f", "json")
    assert "soft-anti-affinity" in str(out.get("policy") or out.get("policies"))
    assert out["project_id"] and out["user_id"]
    openstack(live_cloud, "server", "group", "delete", "cli-soft")


def test_compute_service_forced_down(live_cloud):
    (service,) = openstack(live_cloud, "compute", "service", "list", "--long", "-f", "json")
    assert (service["State"], service["Forced Down"]) == ("up", False)
    run(live_cloud, "compute", "service", "set", "--down", service["Host"], service["Binary"])
    (service,) = openstack(live_cloud, "compute", "service", "list", "--long", "-f", "json")
    assert (service["State"], service["Forced Down"]) == ("down", True)
    run(live_cloud, "compute", "service", "set", "--up", service["Host"], service["Binary"])
    (service,) = openstack(live_cloud, "compute", "service", "list", "--long", "-f", "json")
    assert (service["State"], service["Forced Down"]) == ("up", False)


def test_server_lifecycle(live_cloud):
    cloud = live_cloud
    server = openstack(cloud, "server", "create", "--image", "testvm", "--flavor", "m1.nano", "--key-name", "cli-key",
                       "--description", "made by the CLI", "--wait", "cli-vm", "-f", "json")
    sid = server["id"]
    assert server["status"] == "ACTIVE"
    assert sid in [s["ID"] for s in openstack(cloud, "server", "list", "-f", "json")]
    shown = openstack(cloud, "server", "show", sid, "-f", "json")
    assert (shown["name"], shown["key_name"], shown["description"]) == ("cli-vm", "cli-key", "made by the CLI")
    listed = lambda *args: [s["ID"] for s in openstack(cloud, "server", "list", *args, "-f", "json")]
    assert sid in listed("--image", "testvm", "--flavor", "m1.nano")
    assert sid not in listed("--flavor", "m1.micro")
    # Admin-only filters (this user is an admin).
    assert sid in listed("--host", shown["OS-EXT-SRV-ATTR:host"], "--key-name", "^cli-")
    assert sid not in listed("--config-drive")
    assert sid not in listed("--host", "no-such-host")
    run(cloud, "server", "set", "--description", "changed by the CLI", sid)  # 2.19
    assert openstack(cloud, "server", "show", sid, "-f", "json")["description"] == "changed by the CLI"
    run(cloud, "server", "set", "--tag", "web", "--tag", "prod", sid)  # 2.26
    assert openstack(cloud, "server", "show", sid, "-f", "json")["tags"] == ["prod", "web"]
    assert sid in listed("--tags", "web", "--tags", "prod")
    assert sid not in listed("--not-tags", "web")
    run(cloud, "server", "unset", "--tag", "web", sid)
    assert openstack(cloud, "server", "show", sid, "-f", "json")["tags"] == ["prod"]
    assert sid not in listed("--tags", "web")
    wait_ready(cloud, sid)

    run(cloud, "server", "dump", "create", sid)  # 2.17: an NMI, which this guest's kernel logs
    cloud.wait_for(lambda: "NMI received" in run(cloud, "console", "log", "show", sid), 60, interval=1,
                   what="the guest kernel to log the NMI")
    assert status(cloud, sid) == "ACTIVE"

    run(cloud, "server", "stop", sid)
    cloud.wait_for(lambda: status(cloud, sid) == "SHUTOFF", 120, interval=1, what="SHUTOFF")
    run(cloud, "server", "start", sid)
    cloud.wait_for(lambda: status(cloud, sid) == "ACTIVE", 120, interval=1, what="ACTIVE")
    wait_ready(cloud, sid)

    run(cloud, "server", "reboot", "--hard", "--wait", sid)
    assert status(cloud, sid) == "ACTIVE"
    assert MARKER in run(cloud, "console", "log", "show", sid)

    run(cloud, "server", "resize", "--flavor", "m1.micro", "--wait", sid)
    assert status(cloud, sid) == "VERIFY_RESIZE"
    run(cloud, "server", "resize", "confirm", sid)
    cloud.wait_for(lambda: status(cloud, sid) == "ACTIVE", 60, interval=1, what="ACTIVE after confirm")
    assert openstack(cloud, "server", "show", sid, "-f", "json")["flavor"].startswith("m1.micro")
    # An admin's record of the move (os-migrations; the resize stays on its host).
    moves = openstack(cloud, "server", "migration", "list", "--server", sid, "-f", "json")
    assert [(m["Status"], m["Type"], m["Source Compute"] == m["Dest Compute"]) for m in moves] == [
        ("confirmed", "resize", True)]

    actions = openstack(cloud, "server", "event", "list", sid, "-f", "json")
    assert {"create", "stop", "start", "reboot", "resize", "confirmResize"} <= {a["Action"] for a in actions}

    image = openstack(cloud, "server", "image", "create", "--name", "cli-snap", "--wait", sid, "-f", "json")
    assert image["status"] == "active"
    cloud.wait_for(lambda: cloud.server(sid)["OS-EXT-STS:task_state"] is None,
                   60, interval=1, what="the snapshot task to end")
    openstack(cloud, "image", "delete", "cli-snap")

    # createBackup: once a backup is uploaded, only the newest --rotate backups of its type stay
    for name in ("cli-daily-1", "cli-daily-2"):
        run(cloud, "server", "backup", "create", "--name", name, "--type", "daily", "--rotate", "1", "--wait", sid)
        cloud.wait_for(lambda: cloud.server(sid)["OS-EXT-STS:task_state"] is None,
                       60, interval=1, what="the backup task to end")
    names = {image["Name"] for image in openstack(cloud, "image", "list", "-f", "json")}
    assert "cli-daily-2" in names and "cli-daily-1" not in names
    latest = openstack(cloud, "image", "show", "cli-daily-2", "-f", "json")
    assert latest["status"] == "active"
    assert {k: latest["properties"][k] for k in ("image_type", "backup_type", "instance_uuid")} == {
        "image_type": "backup", "backup_type": "daily", "instance_uuid": sid}
    openstack(cloud, "image", "delete", "cli-daily-2")

    # shelve: the host uploads the root disk and lets the server go; unshelve boots it from that image
    run(cloud, "server", "shelve", "--wait", sid)
    shelved = openstack(cloud, "server", "show", sid, "-f", "json")
    assert (shelved["status"], shelved["OS-EXT-SRV-ATTR:host"]) == ("SHELVED_OFFLOADED", None)
    assert sid not in listed("--host", shown["OS-EXT-SRV-ATTR:host"])
    image = openstack(cloud, "image", "show", "cli-vm-shelved", "-f", "json")
    assert image["status"] == "active" and image["properties"]["instance_uuid"] == sid
    assert int(image["virtual_size"]) >= 32 << 20
    run(cloud, "server", "unshelve", "--wait", sid)
    assert status(cloud, sid) == "ACTIVE"
    wait_ready(cloud, sid)
    assert "cli-vm-shelved" not in {i["Name"] for i in openstack(cloud, "image", "list", "-f", "json")}

    run(cloud, "server", "set", "--state", "error", "--auto-approve", sid)  # an admin's os-resetState
    assert status(cloud, sid) == "ERROR"
    run(cloud, "server", "set", "--state", "active", "--auto-approve", sid)
    assert status(cloud, sid) == "ACTIVE"

    run(cloud, "server", "delete", "--wait", sid)
    gone = cli.run(["server", "show", sid], cli_env(cloud))
    assert gone.returncode != 0
    # 2.21: a deleted server's events can still be read.
    actions = openstack(cloud, "server", "event", "list", sid, "-f", "json")
    assert {"create", "trigger_crash_dump", "createBackup", "shelve", "unshelve", "resetState", "delete"} <= {
        a["Action"] for a in actions}


def test_server_on_the_projects_network_force_deleted(live_cloud):
    """Without --nic the CLI sends an empty `networks`: the server gets the project's one network,
    as from Nova. A fixed IP added and removed. `server restore` finds nothing soft deleted (409); `server delete --force` is a
    delete."""
    cloud = live_cloud
    server = openstack(cloud, "server", "create", "--image", "testvm", "--flavor", "m1.nano", "--wait", "cli-forced",
                       "-f", "json")
    assert list(server["addresses"]) == ["private"]
    # `server add fixed ip` attaches an interface (os-interface); `server remove fixed ip` is
    # Nova's removeFixedIp, which takes the address off that port.
    [added] = openstack(cloud, "server", "add", "fixed", "ip", server["id"], "private", "-f", "json")["Fixed IPs"]
    addresses = lambda: openstack(cloud, "server", "show", server["id"], "-f", "json")["addresses"]["private"]
    assert added["ip_address"] in addresses() and len(addresses()) == 2
    run(cloud, "server", "remove", "fixed", "ip", server["id"], added["ip_address"])
    assert addresses() == server["addresses"]["private"]
    restore = cli.run(["server", "restore", server["id"]], cli_env(cloud))
    assert restore.returncode != 0 and "409" in restore.stderr and "vm_state active" in restore.stderr
    run(cloud, "server", "delete", "--force", "--wait", server["id"])
    assert server["id"] not in [s["ID"] for s in openstack(cloud, "server", "list", "-f", "json")]
    assert openstack(cloud, "server", "event", "list", server["id"], "-f", "json")[0]["Action"] == "delete"


def test_usage_show_and_list(live_cloud):
    """os-simple-tenant-usage: the deleted server above ran within OSC's default four weeks."""
    def servers(value):
        return len(value) if isinstance(value, list) else int(value)

    shown = openstack(live_cloud, "usage", "show", "-f", "json")
    assert servers(shown["Servers"]) >= 1 and float(shown["CPU Hours"]) > 0
    assert float(shown["RAM MB-Hours"]) > float(shown["CPU Hours"])
    listed = openstack(live_cloud, "usage", "list", "-f", "json")  # every project's: this user is an admin
    assert any(servers(row["Servers"]) >= 1 and float(row["CPU Hours"]) > 0 for row in listed)
