"""The portal's compute pages in a real browser (Playwright driving Debian's Chromium) against a
whole running cloud (tests/e2e/cloud.py) with real TCG VMs.

The tests tell one story, in order, on as few VMs as the story allows: launch two instances at
once (count=2) with a key pair and user data and watch their rows turn ACTIVE (then delete the
second, which the rest does not need); key pairs; the admin's hosts and flavors pages; the first
instance's page (overview, console log, the noVNC browser console); stop and start it from the
list's action menu, and its action log; and a member of another project who sees none of it.
The order puts the pages that need no guest while the guest boots. Pages are never reloaded while
they wait for a change: a marker on `window` proves it.
"""

import base64
import hashlib
import re
import secrets
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, expect

from tests.e2e.test_portal import (  # noqa: F401 - browser and watched are fixtures
    BOOT_MARKER,
    Watched,
    browser,
    log_in,
    option_value,
    screenshot_on_failure,
    watched,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SLOW_MS = 120_000  # TCG on two shared cores: generous
USER_DATA = "#!/bin/sh\necho CLOUDMGR_PORTAL_USER_DATA\n"


@pytest.fixture(scope="module")
def story(live_cloud):
    """What the module's tests share: the instances (made by the first test) and their key pair.
    Afterwards the cloud is left as found: instances deleted, the host enabled."""
    cloud, token = live_cloud, live_cloud.token()
    tag = secrets.token_hex(2)
    keypair = f"pc-key-{tag}"
    resp = cloud.request("POST", "/compute/v2.1/os-keypairs", {"keypair": {"name": keypair}}, token)
    assert resp.status == 200, resp.body
    state = SimpleNamespace(name=f"pc-{tag}", tag=tag, keypair=keypair, ids={})
    yield state
    cloud.request("PUT", "/compute/v2.1/os-services/enable",
                  {"host": cloud.env["CLOUDMGR_HOSTNAME"], "binary": "nova-compute"}, token)
    for server_id in state.ids.values():
        cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
    for server_id in state.ids.values():
        cloud.wait_for(lambda: cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=token).status == 404,
                       90, interval=0.5, what=f"server {server_id} to be deleted")
    cloud.request("DELETE", f"/compute/v2.1/os-keypairs/{keypair}", token=token)


def first_instance(story) -> tuple[str, str]:
    """(name, id) of the instance the later tests use."""
    name = f"{story.name}-1"
    if name not in story.ids:
        pytest.skip("the launch test did not make the instance")
    return name, story.ids[name]


def wait_booted(cloud, server_id) -> None:
    """Until the guest's init is done: its shell prompt comes after acpid, so from then on the
    ACPI power button (a clean stop) works."""
    def ready():
        out = cloud.console_output(server_id)
        return BOOT_MARKER in out and "testvm#" in out[out.rfind(BOOT_MARKER):]
    cloud.wait_for(ready, SLOW_MS / 1000, interval=1, what=f"{server_id} to boot")


def row_of(page: Page, name: str):
    return page.locator(f'#instance-rows tr[data-name="{name}"]')


def choose_action(page: Page, row, label: str, answer: str | None) -> str:
    """Open the row's action menu and pick ``label``; ``answer`` the confirmation dialog
    ("accept", "dismiss"), or None for an action that asks nothing. Returns the dialog's text."""
    seen = []

    def on_dialog(dialog):
        seen.append(dialog.message)
        dialog.accept() if answer == "accept" else dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        row.get_by_role("button", name="Actions").click()
        row.get_by_role("button", name=label, exact=True).click()
    finally:
        page.remove_listener("dialog", on_dialog)
    assert bool(seen) == (answer is not None), seen
    return seen[0] if seen else ""


def md5_fingerprint(public_key_line: str) -> str:
    """Nova's key pair fingerprint."""
    digest = hashlib.md5(base64.b64decode(public_key_line.split()[1])).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def test_launch_two_with_a_key_pair_and_user_data(watched, live_cloud, story):
    page = watched.page
    names = [f"{story.name}-1", f"{story.name}-2"]
    with screenshot_on_failure(page, "compute-launch", live_cloud):
        page.goto("/instances/launch/")
        log_in(page, "admin", live_cloud.admin_password)
        expect(page).to_have_url(re.compile(r"/instances/launch/$"))
        page.locator("#id_name").fill(story.name)
        page.locator("#id_image").select_option(option_value(page, "#id_image", "testvm ("))
        page.locator("#id_flavor").select_option(option_value(page, "#id_flavor", "m1.nano ("))
        page.locator("#id_key_name").select_option(story.keypair)
        page.locator("#id_count").fill("2")
        page.locator("#id_user_data").fill(USER_DATA)
        page.get_by_role("button", name="Launch", exact=True).click()

        # Two rows, NAME-1 and NAME-2, that start in BUILD and turn ACTIVE by themselves.
        expect(page).to_have_url(re.compile(r"/instances/$"))
        expect(page.locator("#messages")).to_contain_text(f"2 instances are launching: {names[0]}, {names[1]}.")
        page.evaluate("window.__notReloaded = true")
        for name in names:
            expect(row_of(page, name)).to_have_count(1)
            story.ids[name] = row_of(page, name).get_attribute("id").removeprefix("instance-")
        first_seen = page.locator("#instance-rows .status-badge").evaluate_all("els => els.map(e => e.dataset.status)")
        assert "BUILD" in first_seen, f"the launch answered with rows already settled: {first_seen}"
        for name in names:
            settled = row_of(page, name).locator(".status-badge[data-status=ACTIVE], .status-badge[data-status=ERROR]")
            expect(settled).to_have_count(1, timeout=SLOW_MS)
            assert settled.inner_text() == "ACTIVE", live_cloud.server(story.ids[name]).get("fault")
            expect(row_of(page, name).locator("td").nth(5)).to_have_text(live_cloud.env["CLOUDMGR_HOSTNAME"])
        assert page.evaluate("window.__notReloaded === true"), "the list was reloaded"

        # One guest is enough for the rest: the second goes, from its row, after a confirmation.
        page.once("dialog", lambda dialog: dialog.accept())
        row_of(page, names[1]).get_by_role("button", name="Delete").click()
        expect(page.locator("#messages")).to_contain_text(f"Instance {names[1]} is being deleted.")
        expect(row_of(page, names[1])).to_have_count(0, timeout=SLOW_MS)
        watched.assert_clean()

    # Behind the portal: both got the key pair, and the user data as typed (LF, not the
    # browser's CRLF), as base64. (The second is deleted: its record stays, marked deleted.)
    out = live_cloud.manage("shell", "--no-imports", "-c", "from apps.instances.models import Instance; "
                            f"print(*Instance.objects.filter(pk__in={list(story.ids.values())!r})"
                            ".values_list('key_name', 'user_data'))").stdout.strip()
    assert out == " ".join([str((story.keypair, base64.b64encode(USER_DATA.encode()).decode()))] * 2), out


def test_key_pairs_create_import_and_refuse_a_bad_key(watched, live_cloud, story):
    page = watched.page
    created, imported = f"pc-made-{story.tag}", f"pc-imported-{story.tag}"
    with screenshot_on_failure(page, "compute-keypairs", live_cloud):
        page.goto("/instances/keypairs/")
        log_in(page, "admin", live_cloud.admin_password)
        expect(page).to_have_url(re.compile(r"/instances/keypairs/$"))

        # Create: the private key is on the page once, and it is the pair of the stored key.
        page.locator("#keypair-create #id_name").fill(created)
        page.get_by_role("button", name="Create key pair").click()
        shown = page.get_by_test_id("private-key").locator("pre")
        expect(shown).to_contain_text("BEGIN OPENSSH PRIVATE KEY")
        private = serialization.load_ssh_private_key(shown.inner_text().strip().encode() + b"\n", password=None)
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH).decode()
        row = page.locator(f'#keypairs-table tr[data-name="{created}"]')
        expect(row).to_contain_text(md5_fingerprint(public))
        expect(row).to_contain_text("ssh-ed25519")
        page.reload()
        expect(row).to_have_count(1)
        expect(page.get_by_test_id("private-key")).to_have_count(0)
        expect(page.get_by_test_id("form-error")).to_have_count(0)  # the reload did not post again

        # Import a public key made here.
        mine = Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " me@laptop"
        page.locator("#id_import_name").fill(imported)
        page.locator("#id_import_public_key").fill(mine)
        page.get_by_role("button", name="Import public key").click()
        expect(page.locator("#messages")).to_contain_text(f"Key pair {imported} imported.")
        expect(page.get_by_test_id("private-key")).to_have_count(0)
        expect(page.locator(f'#keypairs-table tr[data-name="{imported}"]')).to_contain_text(md5_fingerprint(mine))

        # A bad key: a clear error on the import form, what was typed kept, nothing stored.
        for bad, reason in [("not a key at all", "must be ssh-rsa, ssh-ed25519 or ecdsa"),
                            ("ssh-ed25519 AAAAbroken", "Keypair data is invalid")]:
            page.locator("#id_import_name").fill(f"pc-bad-{story.tag}")
            page.locator("#id_import_public_key").fill(bad)
            page.get_by_role("button", name="Import public key").click()
            expect(page.locator("#keypair-import").get_by_test_id("form-error")).to_contain_text(reason)
            expect(page.locator("#id_import_public_key")).to_have_value(bad)
        expect(page.locator(f'#keypairs-table tr[data-name="pc-bad-{story.tag}"]')).to_have_count(0)

        # A taken name: said so.
        page.locator("#keypair-create #id_name").fill(created)
        page.get_by_role("button", name="Create key pair").click()
        expect(page.locator("#keypair-create").get_by_test_id("form-error")).to_contain_text("already exists")

        # Delete both, confirming.
        for name in (created, imported):
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator(f'#keypairs-table tr[data-name="{name}"]').get_by_role("button", name="Delete").click()
            expect(page.locator("#messages")).to_contain_text(f"Key pair {name} deleted.")
            expect(page.locator(f'#keypairs-table tr[data-name="{name}"]')).to_have_count(0)
        watched.assert_clean()


def test_admin_hosts_and_flavors(watched, live_cloud, story):
    first_instance(story)
    hostname = live_cloud.env["CLOUDMGR_HOSTNAME"]
    page = watched.page
    with screenshot_on_failure(page, "compute-admin", live_cloud):
        page.goto("/instances/hosts/")
        log_in(page, "admin", live_cloud.admin_password)
        host = page.locator(f'#hosts-table tr[data-host="{hostname}"]')
        expect(host.get_by_test_id("host-state")).to_have_text("up")
        expect(host.get_by_test_id("host-status")).to_have_text("enabled")
        # Capacity bars: our m1.nano instance claims at least 1 vCPU, 128 MiB, 1 GB.
        for bar, least in (("vcpus", 1), ("ram", 128), ("disk", 1)):
            cell = host.get_by_test_id(f"capacity-{bar}")
            expect(cell.locator(".progress-bar")).to_have_count(1)
            used, capacity = map(int, re.match(r"(\d+) / (\d+)", cell.inner_text()).groups())
            assert least <= used <= capacity, (bar, used, capacity)
            pct = int(cell.locator(".progress").get_attribute("aria-valuenow"))
            assert pct == min(100, round(100 * used / capacity)), (bar, pct)
            assert cell.locator(".progress-bar").evaluate("e => e.style.width") == f"{pct}%"

        # Disable, with a reason.
        host.get_by_placeholder("Reason (optional)").fill("portal test maintenance")
        page.once("dialog", lambda dialog: dialog.accept())
        host.get_by_role("button", name="Disable").click()
        expect(page.locator("#messages")).to_contain_text(f"Host {hostname} disabled")
        expect(host.get_by_test_id("host-status")).to_have_text("disabled")
        expect(host).to_contain_text("portal test maintenance")

        # A launch now finds no host: the portal says so plainly, and the instance is ERROR.
        refused = f"pc-refused-{story.tag}"
        page.goto("/instances/launch/")
        page.locator("#id_name").fill(refused)
        page.locator("#id_image").select_option(option_value(page, "#id_image", "testvm ("))
        page.locator("#id_flavor").select_option(option_value(page, "#id_flavor", "m1.nano ("))
        page.get_by_role("button", name="Launch", exact=True).click()
        expect(page).to_have_url(re.compile(r"/instances/[0-9a-f-]{36}/$"))
        expect(page.locator("#messages .alert-danger")).to_contain_text(
            f"Instance {refused} could not be launched: No valid host was found.")
        expect(page.locator("#messages .alert-success")).to_have_count(0)
        expect(page.locator("#instance-overview").get_by_test_id("status")).to_have_text("ERROR")
        fault = page.locator("#instance-overview").get_by_test_id("fault")
        expect(fault).to_contain_text("No valid host was found")
        expect(fault.get_by_role("link", name="Hosts")).to_have_attribute("href", "/instances/hosts/")
        page.wait_for_load_state()  # htmx, not the confirmation page for browsers without JavaScript
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page).to_have_url(re.compile(r"/instances/$"))
        expect(row_of(page, refused)).to_have_count(0)

        # Enable again.
        page.goto("/instances/hosts/")
        host.get_by_role("button", name="Enable").click()
        expect(page.locator("#messages")).to_contain_text(f"Host {hostname} enabled")
        expect(host.get_by_test_id("host-status")).to_have_text("enabled")

        # Flavors: create one (a taken name is refused), see it offered at launch, delete it.
        flavor = f"pc-flavor-{story.tag}"
        page.goto("/instances/flavors/")
        for _ in range(2):
            page.locator("#flavor-create #id_name").fill(flavor)
            page.locator("#id_vcpus").fill("1")
            page.locator("#id_ram").fill("96")
            page.locator("#id_disk").fill("1")
            page.get_by_role("button", name="Create flavor").click()
        expect(page.get_by_test_id("form-error")).to_contain_text("already exists")
        row = page.locator(f'#flavors-table tr[data-name="{flavor}"]')
        expect(row).to_contain_text("96 MiB")
        page.goto("/instances/launch/")
        option_value(page, "#id_flavor", f"{flavor} (1 vCPU, 96 MiB RAM, 1 GB disk)")
        page.goto("/instances/flavors/")
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("#messages")).to_contain_text(f"Flavor {flavor} deleted.")
        expect(row).to_have_count(0)
        watched.assert_clean()


def test_instance_page_overview_console_log_and_browser_console(watched, live_cloud, story):
    name, server_id = first_instance(story)
    page = watched.page
    with screenshot_on_failure(page, "compute-instance-page", live_cloud):
        page.goto("/instances/")
        log_in(page, "admin", live_cloud.admin_password)
        row_of(page, name).get_by_role("link", name=name).click()
        expect(page).to_have_url(re.compile(rf"/instances/{server_id}/$"))
        page.wait_for_load_state()  # the tabs need Bootstrap's script
        expect(page.get_by_role("heading", name=name)).to_be_visible()

        overview = page.locator("#instance-overview")
        expect(overview.get_by_test_id("status")).to_have_text("ACTIVE")
        expect(overview.get_by_test_id("task-state")).to_have_text("—")
        expect(overview.get_by_test_id("power-state")).to_have_text("Running")
        expect(overview.get_by_test_id("flavor")).to_contain_text("m1.nano (1 vCPU, 128 MiB")
        expect(overview.get_by_test_id("image")).to_have_text("testvm")
        expect(overview.get_by_test_id("key-name")).to_have_text(story.keypair)
        expect(overview.get_by_test_id("user-data")).to_have_text("given")
        expect(overview.get_by_test_id("host")).to_have_text(live_cloud.env["CLOUDMGR_HOSTNAME"])
        expect(overview.get_by_test_id("instance-id")).to_have_text(server_id)

        # The console log: the guest's boot marker, by itself.
        page.get_by_role("tab", name="Console log").click()
        expect(page).to_have_url(re.compile(r"#log$"))
        expect(page.locator("#console-log")).to_be_visible()
        expect(page.locator("#console-log")).to_contain_text(BOOT_MARKER, timeout=SLOW_MS)

        # The browser console: noVNC from the portal's static files, through the console proxy.
        sockets = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.get_by_role("tab", name="Browser console").click()
        status = page.locator("#vnc-status")
        expect(status).to_have_attribute("data-state", "connected", timeout=30_000)
        has_framebuffer = "() => document.querySelector('#vnc-screen canvas')?.width > 0"
        page.wait_for_function(has_framebuffer)
        width, height = page.locator("#vnc-screen canvas").evaluate("c => [c.width, c.height]")
        assert width >= 640 and height >= 400, (width, height)
        # That token is used up; Reconnect asks for a fresh one and connects again.
        page.locator("#vnc-reconnect").click()
        page.wait_for_function(has_framebuffer)
        expect(status).to_have_attribute("data-state", "connected", timeout=30_000)
        proxy = live_cloud.env["CLOUDMGR_CONSOLE_URL"].replace("http://", "ws://")
        assert len(sockets) == 2 and all(url.startswith(proxy + "/?token=") for url in sockets), sockets
        assert sockets[0] != sockets[1]
        # Leaving the tab closes the connection.
        page.get_by_role("tab", name="Overview").click()
        expect(status).to_have_attribute("data-state", "idle")
        expect(page.locator("#vnc-screen canvas")).to_have_count(0)
        watched.assert_clean()


def test_stop_and_start_from_the_action_menu_then_the_action_log(watched, live_cloud, story):
    name, server_id = first_instance(story)
    wait_booted(live_cloud, server_id)
    page = watched.page
    actions_sent = []
    page.on("request", lambda req: actions_sent.append(req.url) if "/action/" in req.url else None)
    with screenshot_on_failure(page, "compute-stop-start", live_cloud):
        page.goto("/instances/")
        log_in(page, "admin", live_cloud.admin_password)
        row = row_of(page, name)
        expect(row.locator(".status-badge")).to_have_text("ACTIVE")
        page.evaluate("window.__notReloaded = true")

        # A cancelled confirmation sends nothing and changes nothing (a poll comes and goes).
        asked = choose_action(page, row, "Shut off", "dismiss")
        assert name in asked, asked
        with page.expect_response(re.compile(r"/instances/rows/$")):
            pass
        expect(row.locator(".status-badge")).to_have_text("ACTIVE")
        assert actions_sent == []
        assert live_cloud.server(server_id)["status"] == "ACTIVE"

        # Confirmed: the row turns SHUTOFF in place.
        choose_action(page, row, "Shut off", "accept")
        expect(page.locator("#messages")).to_contain_text(f"Shut off: requested for {name}.")
        assert len(actions_sent) == 1 and actions_sent[0].endswith(f"/{server_id}/action/stop/"), actions_sent
        expect(row.locator(".status-badge")).to_have_text("SHUTOFF", timeout=SLOW_MS)
        expect(row.locator("td").nth(2)).to_have_text("—")

        # Start asks nothing; the row comes back to ACTIVE.
        choose_action(page, row, "Start", None)
        expect(page.locator("#messages")).to_contain_text(f"Start: requested for {name}.")
        expect(row.locator(".status-badge")).to_have_text("ACTIVE", timeout=SLOW_MS)
        assert page.evaluate("window.__notReloaded === true"), "the list was reloaded"

        # The instance's action log: create, stop, start, newest first, all done, by admin.
        page.goto(f"/instances/{server_id}/#actions")
        log = page.get_by_test_id("action-log")
        expect(log).to_be_visible()
        expect(log.locator("tbody tr td:first-child")).to_have_text(["start", "stop", "create"])
        expect(log.locator("tbody tr .badge")).to_have_text(["Success"] * 3)
        expect(log.locator("tbody tr td:nth-child(4)")).to_have_text(["admin"] * 3)
        watched.assert_clean()


def test_a_member_of_another_project_sees_none_of_it(browser, live_cloud, story):  # noqa: F811
    name, server_id = first_instance(story)
    cloud, token = live_cloud, live_cloud.token()
    other = f"pc-other-{story.tag}"
    project = cloud.request("POST", "/identity/v3/projects", {"project": {"name": other, "domain_id": "default"}},
                            token)
    assert project.status == 201, project.body
    password = secrets.token_urlsafe(18) + "aA1!"
    user = cloud.request("POST", "/identity/v3/users",
                         {"user": {"name": other, "password": password, "domain_id": "default"}}, token)
    assert user.status == 201, user.body
    member = cloud.request("GET", "/identity/v3/roles?name=member", token=token).body["roles"][0]
    granted = cloud.request("PUT", f"/identity/v3/projects/{project.body['project']['id']}/users/"
                                   f"{user.body['user']['id']}/roles/{member['id']}", token=token)
    assert granted.status == 204, granted.body

    context = browser.new_context(base_url=cloud.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    watched = Watched(context.new_page(), cloud.url)
    page = watched.page
    try:
        with screenshot_on_failure(page, "compute-other-project", cloud):
            page.goto("/instances/")
            log_in(page, other, password)
            expect(page).to_have_url(re.compile(r"/instances/$"))
            expect(page.get_by_test_id("current-project")).to_have_text(other)
            expect(page.locator("#instance-rows")).to_contain_text(f"No instances in project {other}")
            with page.expect_response(re.compile(r"/instances/rows/$")):
                pass
            expect(page.locator("#instance-rows tr[data-name]")).to_have_count(0)
            expect(page.locator("body")).not_to_contain_text(story.name)

            # Not by address either: the page, its fragments and its actions are "not found".
            page.goto(f"/instances/{server_id}/")
            expect(page).to_have_url(re.compile(r"/instances/$"))
            expect(page.locator("#messages")).to_contain_text(f"Instance {server_id} could not be found.")
            assert page.request.get(f"/instances/{server_id}/overview/").status == 286
            stop = page.evaluate(
                """async (url) => (await fetch(url, {method: "POST", headers: {"HX-Request": "true",
                   "HX-Target": "instance-rows", ...JSON.parse(document.body.getAttribute("hx-headers"))}})).text()""",
                f"/instances/{server_id}/action/stop/")
            assert "could not be found" in stop and name not in stop
            # Nor the admin's key pair, nor the admin pages.
            page.goto("/instances/keypairs/")
            expect(page.locator("#keypairs-table")).not_to_contain_text(story.keypair)
            page.goto("/instances/hosts/")
            expect(page.get_by_test_id("forbidden")).to_be_visible()
            watched.assert_clean()
    finally:
        context.close()
    assert cloud.server(server_id)["status"] == "ACTIVE"
