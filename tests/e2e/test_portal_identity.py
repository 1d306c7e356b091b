"""The portal's identity pages in a real browser (Playwright driving Debian's Chromium) against a
whole running cloud (tests/e2e/cloud.py):

- two-factor login: the admin turns on an authenticator app (TOTP) reading the secret off the
  page, logs out, logs in again and must give the code (a wrong one is refused); then downloads
  clouds.yaml from API access, and openstacksdk gets a token with that file;
- the cloud admin's pages: create a user (with a generated password, shown once) and give them a
  role; that user logs in, makes an application credential, downloads its clouds.yaml (secret
  shown once), which works with openstacksdk, and deletes it.

The TOTP codes come from a small RFC 6238 implementation here (HMAC-SHA1, 30 s, 6 digits), as an
authenticator app computes them.
"""

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect

# The browser, the watched page and the failure screenshots are those of the portal's first test.
from tests.e2e.test_portal import browser, log_in, screenshot_on_failure, watched  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def totp_code(secret: str, at: float) -> str:
    counter = int(at // 30)
    digest = hmac.new(base64.b32decode(secret, casefold=True), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def fresh_totp_code(secret: str) -> str:
    """The current code, never one about to expire (the server allows no clock drift)."""
    if 30 - time.time() % 30 < 3:
        time.sleep(30 - time.time() % 30 + 0.2)
    return totp_code(secret, time.time())


def open_user_menu_item(page: Page, name: str) -> None:
    page.locator("#user-menu .dropdown-toggle").click()
    page.locator("#user-menu").get_by_role("link", name=name).click()


def log_out(page: Page) -> None:
    page.locator("#user-menu .dropdown-toggle").click()
    page.locator("#user-menu").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))


def download(page: Page, button) -> Path:
    with page.expect_download() as info:
        button.click()
    return Path(info.value.path())


def sdk_token(clouds_yaml: Path, **auth) -> str:
    """A token from the cloud with this clouds.yaml, the way `openstack --os-cloud cloudmgr` gets one."""
    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection

    config = OpenStackConfig(config_files=[str(clouds_yaml)], vendor_files=[], secure_files=[], load_envvars=False)
    connection = Connection(config=config.get_one(cloud="cloudmgr", **auth))
    try:
        return connection.authorize()
    finally:
        connection.close()


def remove_second_factors(cloud, username: str) -> None:
    """Leave the shared cloud's admin as the other tests expect it: password only."""
    cloud.manage(
        "shell", "-c",
        "from allauth.mfa.models import Authenticator; "
        f"Authenticator.objects.filter(user__username={username!r}).delete()",
    )


def test_totp_login_then_download_clouds_yaml(watched, live_cloud):
    page = watched.page
    password = live_cloud.admin_password
    try:
        with screenshot_on_failure(page, "identity-totp-login", live_cloud):
            page.goto("/accounts/login/")
            log_in(page, "admin", password)
            expect(page).to_have_url(re.compile(r"/instances/$"))

            # Turn on the authenticator app; allauth asks for the password once more first.
            open_user_menu_item(page, "Two-factor authentication")
            expect(page).to_have_url(re.compile(r"/accounts/2fa/$"))
            page.get_by_role("link", name="Activate").click()
            expect(page).to_have_url(re.compile(r"/accounts/reauthenticate/"))
            page.locator("#id_password").fill(password)
            page.get_by_role("button", name="Confirm").click()
            expect(page).to_have_url(re.compile(r"/accounts/2fa/totp/activate/$"))
            expect(page.locator(".totp-qr svg")).to_be_visible()
            secret = page.get_by_test_id("totp-secret").input_value()
            assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
            page.locator("#id_code").fill(fresh_totp_code(secret))
            page.get_by_role("button", name="Activate").click()
            expect(page).to_have_url(re.compile(r"/accounts/2fa/recovery-codes/$"))
            expect(page.locator("#messages")).to_contain_text("activated")

            # From now on the password alone does not log in.
            log_out(page)
            log_in(page, "admin", password)
            expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/$"))
            right = fresh_totp_code(secret)
            page.locator("#id_code").fill(f"{(int(right) + 500_000) % 1_000_000:06d}")
            page.get_by_role("button", name="Verify").click()
            expect(page.get_by_test_id("mfa-error")).to_contain_text("Incorrect code")
            expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/$"))
            expect(page.locator("#user-menu")).to_have_count(0)

            # The login is still half-done: the right code finishes it.
            page.locator("#id_code").fill(fresh_totp_code(secret))
            page.get_by_role("button", name="Verify").click()
            expect(page).to_have_url(re.compile(r"/instances/$"))
            expect(page.get_by_test_id("current-project")).to_have_text("admin")

            # API access: the catalog, and a clouds.yaml that openstacksdk can use.
            page.get_by_role("navigation", name="Main").get_by_role("link", name="API access").click()
            expect(page).to_have_url(re.compile(r"/identity/api-access/$"))
            expect(page.locator("#endpoints-table tr[data-service-type=identity]")).to_contain_text(
                f"{live_cloud.url}/identity/v3"
            )
            path = download(page, page.get_by_test_id("download-clouds-yaml"))
            cloud = yaml.safe_load(path.read_text())["clouds"]["cloudmgr"]
            assert cloud["auth"]["auth_url"] == f"{live_cloud.url}/identity/v3"
            assert cloud["auth"]["username"] == "admin" and cloud["auth"]["project_name"] == "admin"
            assert re.fullmatch(r"[0-9a-f]{32}", cloud["auth"]["project_id"])
            assert "password" not in cloud["auth"]
            assert cloud["region_name"] == "RegionOne" and cloud["identity_api_version"] == 3
            assert sdk_token(path, password=password)

            openrc = download(page, page.get_by_test_id("download-openrc")).read_text()
            assert f"export OS_AUTH_URL={live_cloud.url}/identity/v3" in openrc and "read -sr OS_PASSWORD" in openrc
            watched.assert_clean()
    finally:
        remove_second_factors(live_cloud, "admin")


def test_admin_makes_a_user_who_makes_an_application_credential(watched, live_cloud):
    page = watched.page
    username = f"e2e-{secrets.token_hex(3)}"
    with screenshot_on_failure(page, "identity-admin-and-app-credential", live_cloud):
        page.goto("/accounts/login/")
        log_in(page, "admin", live_cloud.admin_password)
        expect(page).to_have_url(re.compile(r"/instances/$"))

        # A new user, with a generated password that is shown once.
        page.locator("#identity-menu .dropdown-toggle").click()
        page.locator("#identity-menu").get_by_role("link", name="Users").click()
        expect(page).to_have_url(re.compile(r"/identity/users/$"))
        page.get_by_role("link", name="Create user").click()
        page.locator("#id_username").fill(username)
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("heading", name=f"User {username} is created")).to_be_visible()
        new_password = page.get_by_test_id("generated-password").input_value()
        assert len(new_password) >= 16

        # A role on the admin project, from the role assignments page (the user is chosen already).
        page.get_by_role("link", name="Grant a role").click()
        expect(page).to_have_url(re.compile(r"/identity/roles/\?user="))
        expect(page.locator("#id_user option:checked")).to_have_text(username)
        page.locator("#id_project").select_option(label="admin")
        page.locator("#id_role").select_option("member")
        page.get_by_role("button", name="Grant", exact=True).click()
        expect(page.locator("#messages")).to_contain_text(f"{username} is member on project admin")
        expect(page.locator(f"#assignments-table tr[data-user='{username}']")).to_contain_text("member")
        log_out(page)

        # The new user: no Identity menu; an application credential from API access.
        log_in(page, username, new_password)
        expect(page).to_have_url(re.compile(r"/instances/$"))
        expect(page.locator("#identity-menu")).to_have_count(0)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="API access").click()
        page.locator("#credential-form #id_name").fill("e2e-ci")
        page.locator("#credential-form #id_description").fill("made by the browser test")
        page.get_by_role("button", name="Create application credential").click()
        expect(page.get_by_role("heading", name="Application credential e2e-ci is created")).to_be_visible()
        secret = page.get_by_test_id("credential-secret").input_value()
        credential_id = page.locator("#credential-id").input_value()
        assert secret and re.fullmatch(r"[0-9a-f]{32}", credential_id)

        path = download(page, page.get_by_test_id("download-credential-clouds-yaml"))
        cloud = yaml.safe_load(path.read_text())["clouds"]["cloudmgr"]
        assert cloud["auth_type"] == "v3applicationcredential"
        assert cloud["auth"] == {
            "auth_url": f"{live_cloud.url}/identity/v3",
            "application_credential_id": credential_id,
            "application_credential_secret": secret,
        }
        assert sdk_token(path)

        # Back on API access the secret is gone for good; delete the credential.
        page.get_by_role("link", name="Done").click()
        row = page.locator(f"#credentials-table tr#credential-{credential_id}")
        expect(row).to_contain_text("e2e-ci")
        assert secret not in page.content()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("#messages")).to_contain_text("Application credential e2e-ci is deleted.")
        expect(row).to_have_count(0)
        watched.assert_clean()
