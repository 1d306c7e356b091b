"""The real python-openstackclient (`openstack` commands, each a process of its own:
tests/e2e/cli.py) and openstacksdk against a running cloud: tokens, the catalog, identity
administration, application credentials, and the compute commands that go through them."""

import json
import os
import secrets
import subprocess

import pytest
import yaml

from tests.e2e import cli


def cli_env(cloud, **overrides) -> dict:
    """The environment of one `openstack` run: ours without any OS_* variable, then the admin's
    credentials, or the overrides (another user's password, an application credential).

    The admin signs in with the session's token (`v3token`), the others with their passwords:
    a password login costs the cloud ~0.4 s of CPU (PBKDF2), and the suite runs hundreds of
    `openstack` commands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(
        OS_AUTH_URL=f"{cloud.url}/identity/v3",
        OS_IDENTITY_API_VERSION="3",
        OS_REGION_NAME="RegionOne",
    )
    if "OS_AUTH_TYPE" not in overrides:
        env.update(OS_PROJECT_NAME="admin", OS_PROJECT_DOMAIN_NAME="Default")
        if "OS_PASSWORD" in overrides:
            env.update(OS_USERNAME="admin", OS_USER_DOMAIN_NAME="Default")
        else:
            env.update(OS_AUTH_TYPE="v3token", OS_TOKEN=cloud.token())
    env.update(overrides)
    return env


def openstack(cloud, *args, check: bool = True, timeout: float = 120, **env_overrides):
    """Run `openstack ARGS` and return its parsed JSON output (None for commands that print
    nothing); with check=False, the CompletedProcess whatever the outcome."""
    result = cli.run(args, cli_env(cloud, **env_overrides), timeout=timeout)
    if not check:
        return result
    assert result.returncode == 0, f"openstack {' '.join(args)} failed:\n{result.stderr}\n{result.stdout}"
    return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture(scope="module")
def names():
    suffix = secrets.token_hex(3)
    return {
        "project": f"cli-project-{suffix}",
        "user": f"cli-user-{suffix}",
        "cred": f"cli-cred-{suffix}",
        # A letter first: the CLI would read a password that starts with "-" as an option.
        "password": "pw" + secrets.token_urlsafe(16),
        "new_password": "pw" + secrets.token_urlsafe(16),
    }


def test_token_issue_and_catalog(live_cloud):
    # The installed console script itself, with the admin's password (the other commands run
    # forked from the test's CLI server, and sign in with the session's token).
    issued = subprocess.run([cli.OPENSTACK, "token", "issue", "-f", "json"], capture_output=True, text=True,
                            env=cli_env(live_cloud, OS_PASSWORD=live_cloud.admin_password), timeout=120, check=True)
    token = json.loads(issued.stdout)
    assert set(token) >= {"expires", "id", "project_id", "user_id"}
    assert len(token["project_id"]) == 32 and len(token["user_id"]) == 32
    catalog = openstack(live_cloud, "catalog", "list", "-f", "json")
    types = {service["Type"] for service in catalog}
    assert {"identity", "compute"} <= types
    for service in catalog:
        assert {e["interface"] for e in service["Endpoints"]} == {"public", "internal", "admin"}
        assert all(e["region"] == "RegionOne" and e["url"].startswith(live_cloud.url) for e in service["Endpoints"])


def test_identity_administration(live_cloud, names):
    project = openstack(
        live_cloud, "project", "create", names["project"], "--description", "made by the CLI test", "-f", "json"
    )
    assert project["name"] == names["project"] and project["enabled"] is True and project["domain_id"] == "default"
    listed = openstack(live_cloud, "project", "list", "-f", "json")
    assert {names["project"], "admin"} <= {p["Name"] for p in listed}
    shown = openstack(live_cloud, "project", "show", names["project"], "-f", "json")
    assert shown["id"] == project["id"] and shown["description"] == "made by the CLI test"

    user = openstack(
        live_cloud,
        "user",
        "create",
        names["user"],
        "--password",
        names["password"],
        "--email",
        "cli@example.com",
        "--project",
        names["project"],
        "-f",
        "json",
    )
    assert user["name"] == names["user"] and user["email"] == "cli@example.com"
    assert user["default_project_id"] == project["id"]
    assert names["user"] in {u["Name"] for u in openstack(live_cloud, "user", "list", "-f", "json")}
    assert openstack(live_cloud, "user", "set", "--password", names["new_password"], names["user"]) is None
    assert openstack(live_cloud, "user", "set", "--email", "cli-new@example.com", names["user"]) is None
    assert openstack(live_cloud, "user", "show", names["user"], "-f", "json")["email"] == "cli-new@example.com"

    assert (
        openstack(live_cloud, "role", "add", "--project", names["project"], "--user", names["user"], "member") is None
    )
    assignments = openstack(
        live_cloud, "role", "assignment", "list", "--project", names["project"], "--names", "-f", "json"
    )
    assert [(a["Role"], a["User"], a["Project"]) for a in assignments] == [
        ("member", f"{names['user']}@Default", f"{names['project']}@Default")
    ]
    everything = openstack(live_cloud, "role", "assignment", "list", "-f", "json")
    assert {"Role": "member", "User": user["id"], "Project": project["id"]}.items() <= next(
        a for a in everything if a["User"] == user["id"]
    ).items()

    # The new user logs in with the new password, into their project (the old one is refused).
    as_user = {"OS_USERNAME": names["user"], "OS_PASSWORD": names["new_password"], "OS_PROJECT_NAME": names["project"]}
    token = openstack(live_cloud, "token", "issue", "-f", "json", **as_user)
    assert (token["user_id"], token["project_id"]) == (user["id"], project["id"])
    refused = openstack(live_cloud, "token", "issue", check=False, **{**as_user, "OS_PASSWORD": names["password"]})
    assert refused.returncode != 0 and "401" in refused.stderr
    assert openstack(live_cloud, "server", "list", "-f", "json", **as_user) == []


def test_application_credential_lifecycle(live_cloud, names):
    cred = openstack(
        live_cloud,
        "application",
        "credential",
        "create",
        names["cred"],
        "--description",
        "CI",
        "--role",
        "member",
        "-f",
        "json",
    )
    assert cred["Name"] == names["cred"] and cred["Secret"] and cred["Unrestricted"] is False
    assert sorted(r["name"] for r in cred["Roles"]) == ["member", "reader"]
    listed = openstack(live_cloud, "application", "credential", "list", "-f", "json")
    assert cred["ID"] in {c["ID"] for c in listed}
    assert all("Secret" not in c for c in listed)

    as_cred = {
        "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_APPLICATION_CREDENTIAL_ID": cred["ID"],
        "OS_APPLICATION_CREDENTIAL_SECRET": cred["Secret"],
    }
    token = openstack(live_cloud, "token", "issue", "-f", "json", **as_cred)
    admin_token = openstack(live_cloud, "token", "issue", "-f", "json")
    assert (token["user_id"], token["project_id"]) == (admin_token["user_id"], admin_token["project_id"])
    assert "m1.nano" in {f["Name"] for f in openstack(live_cloud, "flavor", "list", "-f", "json", **as_cred)}

    assert openstack(live_cloud, "application", "credential", "delete", names["cred"]) is None
    listed = openstack(live_cloud, "application", "credential", "list", "-f", "json")
    assert cred["ID"] not in {c["ID"] for c in listed}
    refused = openstack(live_cloud, "token", "issue", check=False, **as_cred)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_compute_commands_through_keystone(live_cloud):
    flavors = openstack(live_cloud, "flavor", "list", "-f", "json")
    assert {"m1.nano", "m1.tiny"} <= {f["Name"] for f in flavors}
    servers = openstack(live_cloud, "server", "list", "-f", "json")
    assert isinstance(servers, list)


def test_hypervisor_and_aggregate_commands(live_cloud):
    """`hypervisor show` below 2.88 asks the host's uptime and lists the host's aggregates;
    `--matching` below 2.53 is os-hypervisors/{pattern}/search. `openstack aggregate ...` as an
    admin; the cloud's one host keeps its zone (other tests' servers live on it): the zone moves
    are in tests/unit/test_compute_api_nova.py."""
    cloud = live_cloud
    hostname = cloud.env["CLOUDMGR_HOSTNAME"]
    created = openstack(cloud, "aggregate", "create", "ssd-hosts", "-f", "json")
    assert created["name"] == "ssd-hosts" and created["availability_zone"] is None
    assert openstack(cloud, "aggregate", "add", "host", "ssd-hosts", hostname, "-f", "json")["hosts"] == [hostname]
    openstack(cloud, "aggregate", "set", "--property", "ssd=true", "ssd-hosts")
    shown = openstack(cloud, "aggregate", "show", "ssd-hosts", "-f", "json")
    assert (shown["hosts"], shown["properties"]) == ([hostname], {"ssd": "true"})

    matching = openstack(cloud, "hypervisor", "list", "--matching", hostname[:6], "-f", "json")
    assert [h["Hypervisor Hostname"] for h in matching] == [hostname]
    shown = openstack(cloud, "hypervisor", "show", hostname, "-f", "json")
    assert shown["hypervisor_hostname"] == hostname and shown["aggregates"] == ["ssd-hosts"]
    # At 2.28 the host CPU is an object, as libvirt describes this host; QEMU 7.2.x is 7002xxx.
    assert shown["cpu_info"]["arch"] == "x86_64" and shown["cpu_info"]["topology"]["cores"] >= 1
    assert shown["hypervisor_version"] // 1000 == 7002
    # Parsed by the client from the host's uptime line: only there when it matched procps' format.
    assert shown["users"].strip().isdigit() and len(shown["load_average"].split(",")) == 3
    assert shown["uptime"] and shown["host_time"].count(":") == 2

    zoned = openstack(cloud, "aggregate", "create", "--zone", "az-cli", "az-cli-hosts", "-f", "json")
    assert zoned["availability_zone"] == "az-cli"
    openstack(cloud, "aggregate", "set", "--name", "az-cli-racks", "az-cli-hosts")
    openstack(cloud, "aggregate", "unset", "--property", "ssd", "ssd-hosts")
    listed = {a["Name"]: a for a in openstack(cloud, "aggregate", "list", "--long", "-f", "json")}
    assert (set(listed), listed["ssd-hosts"]["Properties"]) == ({"ssd-hosts", "az-cli-racks"}, {})
    assert openstack(cloud, "aggregate", "remove", "host", "ssd-hosts", hostname, "-f", "json")["hosts"] == []
    openstack(cloud, "aggregate", "delete", "ssd-hosts", "az-cli-racks")
    assert openstack(cloud, "aggregate", "list", "-f", "json") == []

    listed = openstack(live_cloud, "host", "list", "-f", "json")
    assert {"Host Name": hostname, "Service": "compute", "Zone": "nova"} in listed
    shown = openstack(live_cloud, "host", "show", hostname, "-f", "json")
    assert [row["Project"] for row in shown][:3] == ["(total)", "(used_now)", "(used_max)"]
    assert shown[0]["CPU"] > 0 and shown[0]["Memory MB"] > 0
    try:
        openstack(live_cloud, "host", "set", "--disable", hostname)
        assert openstack(live_cloud, "compute", "service", "list", "--host", hostname, "-f", "json")[0]["Status"] == \
            "disabled"
    finally:
        openstack(live_cloud, "host", "set", "--enable", hostname)
    assert openstack(live_cloud, "compute", "service", "list", "--host", hostname, "-f", "json")[0]["Status"] == \
        "enabled"
    missing = openstack(live_cloud, "hypervisor", "list", "--matching", "no-such-host", check=False)
    assert missing.returncode != 0 and "No hypervisor matching 'no-such-host'" in missing.stderr


def test_openstacksdk_connects_from_a_clouds_yaml(live_cloud, tmp_path, monkeypatch):
    import openstack as sdk

    clouds = {
        "clouds": {
            "cloudmgr-e2e": {
                "auth": {
                    "auth_url": f"{live_cloud.url}/identity/v3",
                    "username": "admin",
                    "password": live_cloud.admin_password,
                    "project_name": "admin",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
                "interface": "public",
                "identity_api_version": 3,
            }
        }
    }
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    for name in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))

    conn = sdk.connect(cloud="cloudmgr-e2e")
    try:
        project = conn.identity.get_project(conn.current_project_id)
        assert project.name == "admin"
        assert conn.identity.get_user(conn.current_user_id).name == "admin"
        assert "admin" in {p.name for p in conn.identity.projects()}
        assert {"admin", "member", "reader"} <= {r.name for r in conn.identity.roles()}
        assert isinstance(list(conn.compute.servers()), list)
        assert conn.compute.find_flavor("m1.nano", ignore_missing=False).vcpus == 1
    finally:
        conn.close()
