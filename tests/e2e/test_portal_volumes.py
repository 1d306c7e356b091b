"""The portal's volume pages in a real browser (Playwright driving Debian's Chromium) against a
whole running cloud (tests/e2e/cloud.py): the file backend, the backup store and libvirt
hot-plug into a real TCG guest.

One story, in order, on one guest that boots (through the API) while the first test works on
pages that need none: create an empty volume and watch its page show the progress until it is
available; extend it; snapshot it and make a volume from the snapshot; attach the first volume to
the running guest (the guest sees a disk of the new size), back it up while attached, detach it;
restore the backup into a new volume; and delete everything through the pages. The pages are
never reloaded while they wait: every status a volume's page shows is recorded by the page itself
(`window.__statuses`, a `*` when it had a spinner), and a marker on `window` proves no navigation
happened.
"""

import os
import re
import secrets
import signal
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest
from playwright.sync_api import Page, expect

from agents.names import domain_name
from tests.e2e.test_portal import (  # noqa: F401 - browser and watched are fixtures
    browser,
    log_in,
    option_value,
    screenshot_on_failure,
    watched,
)
from tests.e2e.test_volumes import SECTORS_PER_GIB, Guest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SLOW_MS = 180_000  # TCG on two shared cores, and other clouds beside this one
UUID = r"[0-9a-f-]{36}"

# Every status the overview of a volume's page shows, in order, each once (``*``: with a spinner).
RECORD_STATUSES = """
window.__statuses = [];
document.addEventListener("DOMContentLoaded", function () {
  function record() {
    var badge = document.querySelector("#volume-overview .status-badge");
    if (!badge) return;
    var seen = badge.dataset.status + (badge.querySelector(".spinner-border") ? "*" : "");
    if (window.__statuses[window.__statuses.length - 1] !== seen) window.__statuses.push(seen);
  }
  record();
  new MutationObserver(record).observe(document.body, {childList: true, subtree: true});
});
"""


@pytest.fixture(scope="module")
def story(live_cloud):
    """The guest (booted now, used from the second test on) and what the story makes, removed
    afterwards by the API whatever the tests left (they delete it all through the pages)."""
    cloud, token = live_cloud, live_cloud.token()
    tag = secrets.token_hex(2)
    resp = cloud.request("POST", "/compute/v2.1/servers", {"server": {
        "name": f"pv-vm-{tag}", "imageRef": "testvm", "flavorRef": "m1.nano"}}, token)
    assert resp.status == 202, resp.body
    project = cloud.request("GET", "/identity/v3/auth/tokens", token=token,
                            headers={"X-Subject-Token": token}).body["token"]["project"]["id"]
    state = SimpleNamespace(tag=tag, server=f"pv-vm-{tag}", guest=Guest(cloud, token, resp.body["server"]["id"]),
                            volume=f"pv-data-{tag}", snapshot=f"pv-snap-{tag}", clone=f"pv-clone-{tag}",
                            backup=f"pv-backup-{tag}", restored=f"pv-restored-{tag}", project=project, ids={})
    yield state
    _clean_up(cloud, token, state)


def _clean_up(cloud, token, state) -> None:
    base = f"/volume/v3/{state.project}"
    headers = {"OpenStack-API-Version": "volume 3.42"}
    server = state.guest.id
    cloud.request("DELETE", f"/compute/v2.1/servers/{server}", token=token)
    cloud.wait_for(lambda: cloud.request("GET", f"/compute/v2.1/servers/{server}", token=token).status == 404,
                   90, interval=0.5, what="the server to go")
    for kind in ("backups", "volumes"):
        for name in (state.backup, state.restored, state.clone, state.volume):
            for found in cloud.request("GET", f"{base}/{kind}?name={name}", token=token, headers=headers).body[kind]:
                suffix = "?cascade=true" if kind == "volumes" else ""
                cloud.request("DELETE", f"{base}/{kind}/{found['id']}{suffix}", token=token, headers=headers)


def volume_page(watched, live_cloud, path: str) -> Page:
    page = watched.page
    page.add_init_script(RECORD_STATUSES)
    page.goto(path)
    log_in(page, "admin", live_cloud.admin_password)
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return page


def status(page: Page):
    return page.locator("#volume-overview .status-badge")


def wait_status(page: Page, value: str) -> None:
    """Until the volume's page shows ``value`` by itself; an error status fails at once, with the
    reason the page shows."""
    settled = page.locator(f'#volume-overview .status-badge[data-status="{value}"], '
                           '#volume-overview .status-badge[data-status^="error"]')
    expect(settled).to_have_count(1, timeout=SLOW_MS)
    shown = status(page).get_attribute("data-status")
    assert shown == value, f"{shown}: {page.locator('#volume-overview').inner_text()}"


def statuses(page: Page) -> list[str]:
    return page.evaluate("window.__statuses")


def accept_next_dialog(page: Page, seen: list) -> None:
    def on_dialog(dialog):
        seen.append(dialog.message)
        dialog.accept()

    page.once("dialog", on_dialog)


def delete_row(page: Page, seen: list, row, message: str) -> None:
    """Delete through the row's button and its confirm dialog: the page says ``message`` and the
    row goes once the deletion is done."""
    accept_next_dialog(page, seen)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#messages")).to_contain_text(message)
    expect(row).to_have_count(0, timeout=SLOW_MS)


def volume_id_of(page: Page) -> str:
    expect(page).to_have_url(re.compile(rf"/volumes/{UUID}/$"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


@contextmanager
def storage_host_held(cloud):
    """The cloud's agent worker stopped (SIGSTOP) for the duration, continued after: an empty
    volume is made in about 50 ms, often before its page is drawn, so the progress a page shows
    can only be seen for sure while the storage host does not answer yet. Kept to a few seconds
    (a host is down after 30 s without a heartbeat)."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
    ours = {p.pid for p in (cloud.process, cloud.agent) if p is not None}
    while grown := {pid for pid, parent in parents.items() if parent in ours} - ours:
        ours |= grown  # the processes of this cloud: its honcho's (and agent's) descendants
    held = [pid for pid in ours if b"agents.worker" in commands.get(pid, b"")]
    assert held, "the cloud's agent worker"
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in held:
            os.kill(pid, signal.SIGCONT)


def domain_disk_targets(server_id: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByName(domain_name(server_id)).XMLDesc()
    finally:
        conn.close()
    return re.findall(r"<target dev='(vd[a-z]+)'", xml)


def test_create_extend_snapshot_and_a_volume_from_the_snapshot(watched, live_cloud, story):
    page = volume_page(watched, live_cloud, "/volumes/")
    with screenshot_on_failure(page, "volumes-create", live_cloud):
        page.get_by_role("link", name="Create volume").click()
        expect(page).to_have_url(re.compile(r"/volumes/create/$"))
        # An empty volume needs a size: refused on the form, what was typed kept.
        page.locator("#id_name").fill(story.volume)
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator("#volume-form")).to_contain_text("An empty volume needs a size.")
        expect(page.locator("#id_name")).to_have_value(story.volume)
        page.locator("#id_size").fill("1")

        # Its page shows the progress (creating, with a spinner, through the polls) until it is
        # available.
        with storage_host_held(live_cloud):
            page.get_by_role("button", name="Create", exact=True).click()
            story.ids["volume"] = volume_id_of(page)
            expect(page.locator("#messages")).to_contain_text(f"Volume {story.volume} is being created.")
            page.evaluate("window.__notReloaded = true")
            expect(status(page)).to_have_attribute("data-status", "creating")
            expect(status(page).locator(".spinner-border")).to_be_visible()
            expect(page.locator("#attach-button")).to_be_disabled()
            with page.expect_response(lambda r: r.url.endswith(f"/volumes/{story.ids['volume']}/overview/")):
                pass  # a poll answered while it is still creating
        wait_status(page, "available")
        assert statuses(page) == ["creating*", "available"], statuses(page)
        expect(page.get_by_test_id("size")).to_have_text("1 GiB")
        expect(page.get_by_test_id("attachments")).to_have_text("—")
        # The page was drawn while it was being created: the forms follow the poll.
        expect(page.locator("#attach-button")).to_be_enabled()
        expect(page.locator("#extend-form input[name=new_size]")).to_have_value("2")
        assert page.evaluate("window.__notReloaded === true"), "the volume's page was reloaded"

        # Extend to 2 GiB: extending, then the new size.
        page.locator("#extend-form input[name=new_size]").fill("2")
        page.locator("#extend-form").get_by_role("button", name="Extend").click()
        expect(page.locator("#messages")).to_contain_text(f"Volume {story.volume} is growing to 2 GiB.")
        wait_status(page, "available")
        expect(page.get_by_test_id("size")).to_have_text("2 GiB")

        # Snapshot it; the Snapshots tab shows it settle, and makes a volume from it.
        page.locator("#snapshot-form input[name=name]").fill(story.snapshot)
        page.locator("#snapshot-form").get_by_role("button", name="Snapshot").click()
        expect(page.locator("#messages")).to_contain_text(f"Snapshot {story.snapshot} of {story.volume} is being made.")
        page.goto("/volumes/snapshots/")
        row = page.locator(f'#snapshot-rows tr[data-name="{story.snapshot}"]')
        expect(row).to_have_attribute("data-status", "available", timeout=SLOW_MS)
        expect(row).to_contain_text("2 GiB")
        expect(row).to_contain_text(story.volume)
        snapshot_id = row.get_attribute("id").removeprefix("snapshot-")
        row.get_by_role("link", name="Create volume").click()
        expect(page).to_have_url(re.compile(r"/volumes/create/\?snapshot=" + UUID + "$"))
        expect(page.locator("#id_source_2")).to_be_checked()  # made from: a snapshot
        expect(page.locator("#id_snapshot option:checked")).to_have_text(story.snapshot)
        page.locator("#id_name").fill(story.clone)
        page.get_by_role("button", name="Create", exact=True).click()
        story.ids["clone"] = volume_id_of(page)
        wait_status(page, "available")
        expect(page.get_by_test_id("size")).to_have_text("2 GiB")  # the snapshot's size
        expect(page.locator("#volume-facts")).to_contain_text(snapshot_id)
        watched.assert_clean()


def test_attach_to_the_running_guest_back_up_and_detach(watched, live_cloud, story):
    if "volume" not in story.ids:
        pytest.skip("the first test did not make the volume")
    guest, volume_id = story.guest, story.ids["volume"]
    guest.wait_status("ACTIVE", SLOW_MS / 1000)
    guest.wait_booted()  # a detach needs a guest that answers the unplug
    page = volume_page(watched, live_cloud, f"/volumes/{volume_id}/")
    with screenshot_on_failure(page, "volumes-attach", live_cloud):
        page.locator("#attach-form select").select_option(option_value(page, "#attach-form select", story.server))
        page.locator("#attach-form").get_by_role("button", name="Attach").click()
        expect(page.locator("#messages")).to_contain_text(
            f"Volume {story.volume} is being attached to {story.server}.")
        page.evaluate("window.__notReloaded = true")
        wait_status(page, "in-use")
        expect(page.locator("#attach-button")).to_be_disabled()
        expect(page.locator("#snapshot-form input[name=force]")).to_be_checked()  # a snapshot now needs force
        attachment = page.get_by_test_id("attachments")
        expect(attachment.get_by_role("link", name=story.server)).to_have_attribute(
            "href", f"/instances/{guest.id}/")
        expect(attachment).to_contain_text("/dev/vdb")
        expect(attachment).to_contain_text("attached")
        # The guest has it: a virtio disk of 2 GiB whose serial is the volume's id.
        assert "vdb" in domain_disk_targets(guest.id)
        device = guest.wait_disk(volume_id)
        assert int(guest.run(f"cat /sys/block/{device}/size")) == 2 * SECTORS_PER_GIB

        # The list says where it is attached.
        page.goto("/volumes/")
        row = page.locator(f"#volume-{volume_id}")
        expect(row).to_have_attribute("data-status", "in-use")
        expect(row).to_contain_text(f"{story.server} /dev/vdb")

        # Back it up while attached (from a snapshot made for it): backing-up, then in-use again;
        # the Backups tab shows the backup settle with the volume's size.
        page.goto(f"/volumes/{volume_id}/")
        page.locator("#backup-form input[name=name]").fill(story.backup)
        page.locator("#backup-form").get_by_role("button", name="Back up").click()
        expect(page.locator("#messages")).to_contain_text(f"Backup {story.backup} of {story.volume} is being made.")
        wait_status(page, "in-use")
        page.get_by_role("link", name="Backups and restore").click()
        backup = page.locator(f'#backup-rows tr[data-name="{story.backup}"]')
        expect(backup).to_have_attribute("data-status", "available", timeout=SLOW_MS)
        expect(backup).to_contain_text("2 GiB")
        expect(backup).to_contain_text("full")
        expect(backup.get_by_role("link", name=story.volume)).to_have_count(1)

        # Detach (through the confirmation): detaching, then available, and the guest lost it.
        page.goto(f"/volumes/{volume_id}/")
        seen = []
        accept_next_dialog(page, seen)
        page.get_by_test_id("attachments").get_by_role("button", name="Detach").click()
        expect(page.locator("#messages")).to_contain_text(
            f"Volume {story.volume} is being detached from {story.server}.")
        assert seen and story.server in seen[0], seen
        wait_status(page, "available")
        expect(page.get_by_test_id("attachments")).to_have_text("—")
        guest.wait_no_disk(volume_id)
        assert "vdb" not in domain_disk_targets(guest.id)
        story.ids["backup"] = backup_id_of(live_cloud, story)
        watched.assert_clean()


def backup_id_of(cloud, story) -> str:
    body = cloud.request("GET", f"/volume/v3/{story.project}/backups?name={story.backup}", token=cloud.token()).body
    (found,) = body["backups"]
    return found["id"]


def test_restore_the_backup_and_delete_everything(watched, live_cloud, story):
    if "backup" not in story.ids:
        pytest.skip("the second test did not make the backup")
    page = volume_page(watched, live_cloud, "/volumes/backups/")
    seen = []
    with screenshot_on_failure(page, "volumes-restore", live_cloud):
        # Restore into a new volume: its page shows restoring-backup until it is available.
        page.locator("#restore-name").fill(story.restored)
        page.locator(f'#backup-rows tr[data-name="{story.backup}"]').get_by_role("button", name="Restore").click()
        restored_id = volume_id_of(page)
        expect(page.locator("#messages")).to_contain_text(
            f"Backup {story.backup} is being restored into {story.restored}.")
        expect(page.get_by_role("heading", name=story.restored)).to_be_visible()
        wait_status(page, "available")
        assert statuses(page)[-1] == "available" and all(s.endswith("*") for s in statuses(page)[:-1]), statuses(page)
        expect(page.get_by_test_id("size")).to_have_text("2 GiB")

        # A volume with a snapshot cannot be deleted: the page says why.
        page.goto(f"/volumes/{story.ids['volume']}/")
        accept_next_dialog(page, seen)
        page.locator("form[action$='/action/delete/']").get_by_role("button", name="Delete").click()
        expect(page.locator("#messages")).to_contain_text("have snapshots")
        expect(page).to_have_url(re.compile(r"/volumes/$"))

        # Delete: the restored and the cloned volumes from the list (their rows go by themselves),
        # the snapshot, the backup, and the volume.
        for volume_id in (restored_id, story.ids["clone"]):
            delete_row(page, seen, page.locator(f"#volume-{volume_id}"), "is being deleted.")
        page.goto("/volumes/snapshots/")
        delete_row(page, seen, page.locator(f'#snapshot-rows tr[data-name="{story.snapshot}"]'),
                   f"Snapshot {story.snapshot} is being deleted.")
        page.goto("/volumes/backups/")
        delete_row(page, seen, page.locator(f'#backup-rows tr[data-name="{story.backup}"]'),
                   f"Backup {story.backup} is being deleted.")
        page.goto(f"/volumes/{story.ids['volume']}/")
        accept_next_dialog(page, seen)
        page.locator("form[action$='/action/delete/']").get_by_role("button", name="Delete").click()
        expect(page).to_have_url(re.compile(r"/volumes/$"))
        expect(page.locator("#messages")).to_contain_text(f"Volume {story.volume} is being deleted.")
        expect(page.locator(f"#volume-{story.ids['volume']}")).to_have_count(0, timeout=SLOW_MS)
        assert len(seen) == 6, seen
        watched.assert_clean()
