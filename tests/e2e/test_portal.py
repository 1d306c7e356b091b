"""The browser portal in a real browser: Playwright driving Debian's Chromium against a whole
running cloud (tests/e2e/cloud.py), with a real VM behind the pages.

The page is never reloaded while it waits for the instance: the overview, the console log and the
list's rows change by themselves (htmx polls). A marker set on `window` proves that no navigation
happened. On failure a screenshot and the page's HTML go to var/e2e/screenshots/ (the cloud's own
data dir is removed when the session ends).
"""

import re
import secrets
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "var" / "e2e" / "screenshots"
BOOT_MARKER = "CLOUDMGR_TESTVM_BOOTED"

ACTIVE_TIMEOUT_MS = 90_000
BOOTED_TIMEOUT_MS = 120_000
DELETED_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page with what it did on the side: JavaScript errors, and requests to other origins
    (the portal loads nothing from a CDN)."""

    def __init__(self, page: Page, origin: str):
        self.page = page
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", lambda req: None if req.url.startswith(origin) else self.foreign.append(req.url))

    def assert_clean(self) -> None:
        assert self.errors == [], f"JavaScript errors on the page: {self.errors}"
        assert self.foreign == [], f"requests to other origins: {self.foreign}"


@pytest.fixture
def watched(browser, live_cloud):
    context = browser.new_context(base_url=live_cloud.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield Watched(context.new_page(), live_cloud.url)
    finally:
        context.close()


@contextmanager
def screenshot_on_failure(page: Page, name: str, cloud=None):
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            Path(path.with_suffix(".html")).write_text(page.content())
            print(f"screenshot of the failure: {path} (page at {page.url})")
        except Exception as exc:  # the browser itself may be what failed
            print(f"no screenshot: {exc}")
        if cloud is not None:
            print(cloud.log_tail())
        raise


def log_in(page: Page, username: str, password: str) -> None:
    page.locator("#id_login").fill(username)
    page.locator("#id_password").fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()


def option_value(page: Page, select: str, label_start: str) -> str:
    """The value of the <option> whose label starts with this text (labels carry details)."""
    option = page.locator(f"{select} option").filter(has_text=re.compile("^" + re.escape(label_start)))
    expect(option).to_have_count(1)
    return option.get_attribute("value")


def launch_and_delete(page: Page, password: str, name: str) -> str:
    """The whole story of one instance in the portal; returns the instance's id."""
    # The portal sends a visitor to the login page, and back to the portal after logging in.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    log_in(page, "admin", password)
    expect(page).to_have_url(re.compile(r"/instances/$"))
    expect(page.get_by_test_id("current-project")).to_have_text("admin")

    # Launch.
    page.get_by_role("link", name="Launch instance").click()
    expect(page).to_have_url(re.compile(r"/instances/launch/$"))
    page.locator("#id_name").fill(name)
    page.locator("#id_image").select_option(option_value(page, "#id_image", "testvm ("))
    page.locator("#id_flavor").select_option(option_value(page, "#id_flavor", "m1.nano ("))
    page.get_by_role("button", name="Launch", exact=True).click()

    # The instance's page, which must come to ACTIVE and show the guest's console by itself.
    expect(page).to_have_url(re.compile(r"/instances/[0-9a-f-]{36}/$"))
    instance_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("#messages")).to_contain_text(f"Instance {name} is launching.")
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    settled = "['ACTIVE', 'ERROR'].includes(document.querySelector('#instance-overview .status-badge')?.dataset.status)"
    page.wait_for_function(f"() => {settled}", timeout=ACTIVE_TIMEOUT_MS)
    status = page.locator("#instance-overview .status-badge")
    fault = page.locator("#instance-overview [data-testid=fault]")
    assert status.inner_text().strip() == "ACTIVE", f"instance went to ERROR: {fault.all_inner_texts()}"
    expect(page.locator("#instance-overview [data-testid=task-state]")).to_have_text("—")
    expect(page.locator("#console-log")).to_contain_text(BOOT_MARKER, timeout=BOOTED_TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"

    # Delete it from the list, confirming in the browser's dialog; the row goes away by itself.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Instances").click()
    expect(page).to_have_url(re.compile(r"/instances/$"))
    row = page.locator(f"#instance-rows tr#instance-{instance_id}")
    expect(row).to_be_visible()
    expect(row.locator(".status-badge")).to_have_text("ACTIVE")
    page.evaluate("window.__notReloaded = true")
    dialogs = []

    def confirm(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#messages")).to_contain_text(f"Instance {name} is being deleted.")
    expect(row).to_have_count(0, timeout=DELETED_TIMEOUT_MS)
    assert dialogs and name in dialogs[0], dialogs
    assert page.evaluate("window.__notReloaded === true"), "the list was reloaded"
    return instance_id


def test_launch_watch_boot_and_delete_an_instance(watched, live_cloud):
    name = f"portal-vm-{secrets.token_hex(2)}"
    with screenshot_on_failure(watched.page, "portal-launch-and-delete", live_cloud):
        instance_id = launch_and_delete(watched.page, live_cloud.admin_password, name)
        watched.assert_clean()

    # Behind the portal, the cloud agrees: the server is gone.
    token = live_cloud.token()
    live_cloud.wait_for(
        lambda: live_cloud.request("GET", f"/compute/v2.1/servers/{instance_id}", token=token).status == 404,
        timeout=60,
        what=f"server {instance_id} to be deleted",
    )


def test_wrong_password_shows_an_error_and_stays_on_the_login_page(watched, live_cloud):
    page = watched.page
    with screenshot_on_failure(page, "portal-wrong-password"):
        page.goto("/instances/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/instances/$"))
        log_in(page, "admin", "not-the-password")
        expect(page.get_by_test_id("login-error")).to_contain_text("not correct")
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        expect(page.locator("#id_login")).to_have_value("admin")
        expect(page.locator("#user-menu")).to_have_count(0)
        watched.assert_clean()


def test_log_out(watched, live_cloud):
    page = watched.page
    with screenshot_on_failure(page, "portal-log-out"):
        page.goto("/accounts/login/")
        log_in(page, "admin", live_cloud.admin_password)
        expect(page).to_have_url(re.compile(r"/instances/$"))
        page.locator("#user-menu .dropdown-toggle").click()
        page.locator("#user-menu").get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/accounts/login/$"))
        page.goto("/instances/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/instances/$"))
        watched.assert_clean()
