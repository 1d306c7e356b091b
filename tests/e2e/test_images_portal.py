"""The portal's image pages in a real browser (Playwright driving Debian's Chromium): upload from
the browser with a progress bar, the inspector's refusal shown on the page, sharing, deletion."""

import hashlib
import re
import secrets
import subprocess

import pytest
from playwright.sync_api import expect

from tests.e2e.test_portal import browser, log_in, screenshot_on_failure, watched  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_upload_from_the_browser(watched, live_cloud, tmp_path):
    page = watched.page
    good = tmp_path / "good.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(good), "32M"], check=True)
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil), "16M"],
                   check=True)
    name = f"portal-{secrets.token_hex(3)}"
    with screenshot_on_failure(page, "images-upload", live_cloud):
        page.goto("/images/")
        log_in(page, "admin", live_cloud.admin_password)
        expect(page).to_have_url(re.compile(r"/images/$"))
        expect(page.locator("#images-table")).to_contain_text("testvm")
        page.get_by_role("link", name="Create image").click()

        # A crafted file: the inspector's reason is on the page, the image stays queued.
        page.locator("#id_name").fill(name + "-evil")
        page.locator("#image-file").set_input_files(str(evil))
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_test_id("form-error")).to_contain_text("backing file")
        page.get_by_role("link", name="Open the image.").click()
        expect(page.get_by_test_id("status")).to_contain_text("queued")

        # Try again on the image's page with a good file: the progress bar, then active.
        page.locator("#image-file").set_input_files(str(good))
        page.get_by_role("button", name="Upload", exact=True).click()
        expect(page.get_by_test_id("status")).to_contain_text("active")
        expect(page.locator("#messages")).to_contain_text("is uploaded and active")
        expect(page.locator("body")).to_contain_text(hashlib.md5(good.read_bytes()).hexdigest())

        # A second image straight from the create form.
        page.goto("/images/create/")
        page.locator("#id_name").fill(name)
        page.locator("#image-file").set_input_files(str(good))
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page).to_have_url(re.compile(r"/images/[0-9a-f-]{36}/$"))
        expect(page.get_by_test_id("status")).to_contain_text("active")
        expect(page.locator("#upload-progress")).to_have_count(0)

        # Edit: share it (visibility shared), then delete it with the confirmation page.
        page.get_by_role("link", name="Edit").click()
        page.locator("#id_visibility").select_option("shared")
        page.locator("#id_properties").fill("os_distro=debian")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#properties")).to_contain_text("os_distro")
        expect(page.get_by_test_id("visibility")).to_have_text("shared")
        page.get_by_role("link", name="Delete").click()
        page.get_by_role("button", name="Delete").click()
        expect(page).to_have_url(re.compile(r"/images/$"))
        expect(page.locator(f'#images-table tr[data-name="{name}"]')).to_have_count(0)
        expect(page.locator(f'#images-table tr[data-name="{name}-evil"]')).to_have_count(1)
        watched.assert_clean()
