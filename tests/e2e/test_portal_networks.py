"""The portal's network pages in a real browser (Playwright driving Debian's Chromium) against a
whole running cloud (tests/e2e/cloud.py: real bridges, dnsmasq, router namespaces, nftables).

One story, in order, by a member of a project of its own (so that the admin project's single
network, which other modules' launches rely on, stays the only one): through the forms, a
network, a subnet (a bad CIDR refused first), a router with its gateway on `public` and an
interface on the subnet; the topology picture shows the router linked to both networks, and an
instance booted meanwhile appears in it, linked too, without a reload; a floating IP is allocated,
associated with the instance (the agent makes it ACTIVE, the instance page shows it),
disassociated and released through the confirmation dialogs; an ICMP rule is added to the
default group and deleted; and everything is taken down again through the pages.
"""

import re
import secrets
from types import SimpleNamespace

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_portal import (  # noqa: F401 - browser and watched are fixtures
    browser,
    log_in,
    option_value,
    screenshot_on_failure,
    watched,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CIDR = "10.77.0.0/24"
SLOW_MS = 90_000


@pytest.fixture(scope="module")
def story(live_cloud):
    """A project and its member; what the story makes is recorded, and removed afterwards by the
    API whatever the tests left (they take it all down through the pages when they pass)."""
    cloud, token = live_cloud, live_cloud.token()
    tag = secrets.token_hex(2)
    name = f"pn-{tag}"
    project = cloud.request("POST", "/identity/v3/projects", {"project": {"name": name, "domain_id": "default"}},
                            token)
    assert project.status == 201, project.body
    password = secrets.token_urlsafe(18) + "aA1!"
    user = cloud.request("POST", "/identity/v3/users", {"user": {"name": name, "password": password,
                                                                 "domain_id": "default"}}, token)
    assert user.status == 201, user.body
    member = cloud.request("GET", "/identity/v3/roles?name=member", token=token).body["roles"][0]
    granted = cloud.request("PUT", f"/identity/v3/projects/{project.body['project']['id']}/users/"
                                   f"{user.body['user']['id']}/roles/{member['id']}", token=token)
    assert granted.status == 204, granted.body
    state = SimpleNamespace(tag=tag, user=name, password=password, network=f"pn-net-{tag}",
                            router=f"pn-router-{tag}", server=f"pn-vm-{tag}", ids={})
    yield state
    _clean_up(cloud, token, state)


def _clean_up(cloud, token, state) -> None:
    net = "/network/v2.0"
    if "server" in state.ids:
        cloud.request("DELETE", f"/compute/v2.1/servers/{state.ids['server']}", token=token)
        cloud.wait_for(lambda: cloud.request("GET", f"/compute/v2.1/servers/{state.ids['server']}",
                                             token=token).status == 404, 90, interval=0.5, what="the server to go")
    mine = cloud.token(state.user, state.password, state.user)
    for fip in cloud.request("GET", f"{net}/floatingips", token=mine).body["floatingips"]:
        cloud.request("DELETE", f"{net}/floatingips/{fip['id']}", token=mine)
    if "router" in state.ids:
        router = state.ids["router"]
        if "subnet" in state.ids:
            cloud.request("PUT", f"{net}/routers/{router}/remove_router_interface",
                          {"subnet_id": state.ids["subnet"]}, token)
        cloud.request("DELETE", f"{net}/routers/{router}", token=token)
    if "network" in state.ids:
        cloud.request("DELETE", f"{net}/networks/{state.ids['network']}", token=token)


def member_page(watched, live_cloud, story, path: str) -> Page:
    page = watched.page
    page.goto(path)
    log_in(page, story.user, story.password)
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    expect(page.get_by_test_id("current-project")).to_have_text(story.user)
    return page


def network_menu(page: Page, item: str) -> None:
    """Go to a network page through the navbar's Network menu."""
    page.locator("#network-menu .dropdown-toggle").click()
    page.locator("#network-menu").get_by_role("link", name=item, exact=True).click()


def accept_next_dialog(page: Page, seen: list) -> None:
    def on_dialog(dialog):
        seen.append(dialog.message)
        dialog.accept()

    page.once("dialog", on_dialog)


def test_network_subnet_router_and_the_topology_picture(watched, live_cloud, story):
    page = member_page(watched, live_cloud, story, "/instances/")
    with screenshot_on_failure(page, "networks-build", live_cloud):
        network_menu(page, "Networks")
        expect(page).to_have_url(re.compile(r"/networks/$"))
        expect(page.locator('#networks-table tr[data-name="public"]')).to_have_count(1)  # external: visible

        page.locator("#network-create #id_name").fill(story.network)
        page.get_by_role("button", name="Create network").click()
        expect(page).to_have_url(re.compile(r"/networks/[0-9a-f-]{36}/$"))
        expect(page.locator("#messages")).to_contain_text(f"Network {story.network} created.")
        story.ids["network"] = network_id = page.url.rstrip("/").rsplit("/", 1)[1]

        # A subnet: a CIDR without its prefix is refused on the form, what was typed kept.
        cidr = page.locator("#subnet-create #id_cidr")
        cidr.fill("10.77.0.0")
        page.get_by_role("button", name="Add subnet").click()
        expect(page.locator("#subnet-create .invalid-feedback")).to_contain_text("prefix length")
        expect(cidr).to_have_value("10.77.0.0")
        cidr.fill(CIDR)
        page.get_by_role("button", name="Add subnet").click()
        expect(page.locator("#messages")).to_contain_text(f"Subnet {CIDR} added to {story.network}.")
        row = page.locator(f'#subnets-table tr[data-cidr="{CIDR}"]')
        expect(row).to_contain_text("10.77.0.1")
        story.ids["subnet"] = row.get_attribute("id").removeprefix("subnet-")

        # A router to public, then its interface on the subnet.
        network_menu(page, "Routers")
        page.locator("#router-create #id_name").fill(story.router)
        page.locator("#router-create #id_external_network").select_option(
            option_value(page, "#router-create #id_external_network", "public ("))
        page.get_by_role("button", name="Create router").click()
        expect(page).to_have_url(re.compile(r"/networks/routers/[0-9a-f-]{36}/$"))
        story.ids["router"] = router_id = page.url.rstrip("/").rsplit("/", 1)[1]
        expect(page.get_by_test_id("gateway")).to_contain_text("public")
        expect(page.get_by_test_id("gateway")).to_contain_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))
        page.locator("#interface-add #id_subnet").select_option(
            option_value(page, "#interface-add #id_subnet", f"{story.network}: "))
        page.get_by_role("button", name="Add interface").click()
        expect(page.locator("#messages")).to_contain_text(f"Router {story.router} is connected to {CIDR}.")
        expect(page.locator(f'#interfaces-table tr[data-cidr="{CIDR}"]')).to_contain_text("10.77.0.1")

        # The topology: the router is linked to the network (and to public, by its gateway).
        network_menu(page, "Topology")
        expect(page).to_have_url(re.compile(r"/networks/topology/$"))
        svg = page.locator("#topology-svg")
        public_id = svg.locator('g.topo-network[data-name="public"]').get_attribute("data-id")
        expect(svg.locator(f'g[data-kind="network"][data-id="{network_id}"]')).to_have_attribute(
            "data-name", story.network)
        expect(svg.locator(f'g[data-kind="router"][data-id="{router_id}"]')).to_have_count(1)
        interface = svg.locator(f'g[data-link="router:{router_id}>network:{network_id}"]')
        expect(interface).to_have_attribute("data-kind", "interface")
        expect(interface.locator("text")).to_have_text("10.77.0.1")
        expect(svg.locator(f'g[data-link="router:{router_id}>network:{public_id}"]')).to_have_attribute(
            "data-kind", "gateway")

        # An instance booted now appears in the picture, linked to the network, without a reload.
        page.evaluate("window.__notReloaded = true")
        token = live_cloud.token(story.user, story.password, story.user)
        resp = live_cloud.request("POST", "/compute/v2.1/servers", {"server": {
            "name": story.server, "imageRef": image_id(live_cloud, token), "flavorRef": "42",
            "networks": [{"uuid": network_id}]}}, token)
        assert resp.status == 202, resp.body
        story.ids["server"] = server_id = resp.body["server"]["id"]
        link = svg.locator(f'g[data-link="instance:{server_id}>network:{network_id}"]')
        expect(link).to_have_count(1, timeout=15_000)
        expect(link.locator("text")).to_have_text(re.compile(r"^10\.77\.0\.\d+$"))
        assert page.evaluate("window.__notReloaded === true"), "the topology page was reloaded"
        watched.assert_clean()


def image_id(cloud, token) -> str:
    images = cloud.request("GET", "/image/v2/images?name=testvm", token=token).body["images"]
    assert images, "the bootstrap's testvm image"
    return images[0]["id"]


def test_floating_ip_allocate_associate_disassociate_release(watched, live_cloud, story):
    if "server" not in story.ids:
        pytest.skip("the first test did not build the network")
    server_id, token = story.ids["server"], live_cloud.token()
    live_cloud.wait_for(lambda: live_cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=token)
                        .body["server"]["status"] in ("ACTIVE", "ERROR"), SLOW_MS / 1000, what="the server to settle")
    page = member_page(watched, live_cloud, story, "/networks/floating-ips/")
    with screenshot_on_failure(page, "networks-floating-ip", live_cloud):
        page.locator("#floatingip-allocate #id_floating_network").select_option(
            option_value(page, "#floatingip-allocate #id_floating_network", "public ("))
        page.get_by_role("button", name="Allocate IP").click()
        expect(page.locator("#messages")).to_contain_text("allocated.")
        address = re.search(r"Floating IP (\S+) allocated", page.locator("#messages").inner_text()).group(1)
        row = page.locator(f'#floatingips-table tr[data-address="{address}"]')
        expect(row).to_have_count(1)
        fip_id = row.get_attribute("id").removeprefix("floatingip-")

        # Associate it with the instance's address (the choices name the instance).
        choice = row.locator("select option").filter(has_text=re.compile("^" + re.escape(story.server + ": ")))
        expect(choice).to_have_count(1)
        fixed = re.search(r": (\S+) \(", choice.inner_text()).group(1)
        row.locator("select").select_option(choice.get_attribute("value"))
        row.get_by_role("button", name="Associate").click()
        expect(page.locator("#messages")).to_contain_text(f"Floating IP {address} is associated with {fixed}.")
        expect(row.get_by_test_id("target")).to_contain_text(story.server)
        # The router's host applied the NAT: the agent's answer makes it ACTIVE.
        live_cloud.wait_for(lambda: live_cloud.request("GET", f"/network/v2.0/floatingips/{fip_id}", token=token)
                            .body["floatingip"]["status"] == "ACTIVE", 60, interval=0.5, what="the floating IP")

        # The instance page shows its address and the floating IP.
        page.goto(f"/instances/{server_id}/")
        addresses = page.get_by_test_id("addresses")
        expect(addresses.get_by_test_id("fixed-ip")).to_have_text(fixed)
        expect(addresses.get_by_test_id("floating-ip")).to_have_text(address)

        # Disassociate: a dismissed confirmation sends nothing; an accepted one does.
        page.goto("/networks/floating-ips/")
        seen = []
        page.once("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
        row.get_by_role("button", name="Disassociate").click()
        expect(row.get_by_role("button", name="Disassociate")).to_be_visible()
        assert seen and address in seen[0], seen
        assert live_cloud.request("GET", f"/network/v2.0/floatingips/{fip_id}", token=token).body[
            "floatingip"]["port_id"] is not None
        accept_next_dialog(page, seen)
        row.get_by_role("button", name="Disassociate").click()
        expect(page.locator("#messages")).to_contain_text(f"Floating IP {address} is disassociated.")
        expect(row.locator("select")).to_be_visible()

        accept_next_dialog(page, seen)
        row.get_by_role("button", name="Release").click()
        expect(page.locator("#messages")).to_contain_text(f"Floating IP {address} released.")
        expect(row).to_have_count(0)
        assert live_cloud.request("GET", f"/network/v2.0/floatingips/{fip_id}", token=token).status == 404
        watched.assert_clean()


def test_a_rule_of_the_default_group(watched, live_cloud, story):
    page = member_page(watched, live_cloud, story, "/networks/security-groups/")
    with screenshot_on_failure(page, "networks-rules", live_cloud):
        page.locator('#securitygroups-table tr[data-name="default"] a').click()
        expect(page.get_by_role("heading", name="default")).to_be_visible()
        page.locator("#rule-create #id_protocol").select_option("icmp")
        page.get_by_role("button", name="Add rule").click()
        expect(page.locator("#messages")).to_contain_text("Rule added to default.")
        rule = page.locator('#rules-table tr[data-direction="ingress"][data-protocol="icmp"]')
        expect(rule).to_have_count(1)
        # The same again: the service's refusal, on the form.
        page.locator("#rule-create #id_protocol").select_option("icmp")
        page.get_by_role("button", name="Add rule").click()
        expect(page.locator("#rule-create").get_by_test_id("form-error")).to_contain_text(
            "Security group rule already exists")
        seen = []
        accept_next_dialog(page, seen)
        rule.get_by_role("button", name="Delete").click()
        expect(page.locator("#messages")).to_contain_text("Rule deleted from default.")
        expect(rule).to_have_count(0)
        watched.assert_clean()


def test_take_it_all_down_through_the_pages(watched, live_cloud, story):
    if "router" not in story.ids:
        pytest.skip("the first test did not build the network")
    token = live_cloud.token()
    if "server" in story.ids:  # the instance goes first: its port keeps the network in use
        server_id = story.ids.pop("server")
        live_cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
        live_cloud.wait_for(lambda: live_cloud.request("GET", f"/compute/v2.1/servers/{server_id}",
                                                       token=token).status == 404, SLOW_MS / 1000, interval=0.5,
                            what="the server to go")
    router_id, network_id = story.ids["router"], story.ids["network"]
    page = member_page(watched, live_cloud, story, f"/networks/routers/{router_id}/")
    seen = []
    with screenshot_on_failure(page, "networks-teardown", live_cloud):
        accept_next_dialog(page, seen)
        page.locator(f'#interfaces-table tr[data-cidr="{CIDR}"]').get_by_role("button", name="Remove").click()
        expect(page.locator("#messages")).to_contain_text(f"Router {story.router} is no longer on subnet")
        expect(page.locator("#interfaces-table tr[data-cidr]")).to_have_count(0)
        accept_next_dialog(page, seen)
        page.get_by_role("button", name="Clear gateway").click()
        expect(page.locator("#messages")).to_contain_text(f"The gateway of router {story.router} is cleared.")
        expect(page.get_by_test_id("gateway")).to_contain_text("none")
        accept_next_dialog(page, seen)
        page.get_by_role("button", name="Delete router").click()
        expect(page).to_have_url(re.compile(r"/networks/routers/$"))
        expect(page.locator("#messages")).to_contain_text(f"Router {story.router} deleted.")
        story.ids.pop("router")

        page.goto(f"/networks/{network_id}/")
        accept_next_dialog(page, seen)
        page.get_by_role("button", name="Delete network").click()
        expect(page).to_have_url(re.compile(r"/networks/$"))
        expect(page.locator("#messages")).to_contain_text(f"Network {story.network} deleted.")
        expect(page.locator(f'#networks-table tr[data-name="{story.network}"]')).to_have_count(0)
        story.ids.pop("network")
        story.ids.pop("subnet", None)
        assert [story.router in m or story.network in m or CIDR in m for m in seen] == [True] * 4, seen
        watched.assert_clean()
