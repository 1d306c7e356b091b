"""A real guest on a real network: the compute spawn path plugs its tap (``managed='no'``), and the
test guest image gets exactly its port's address from the network's dnsmasq."""

from __future__ import annotations

import re
import time
import uuid

import libvirt
import pytest

from agents import names
from agents.compute.libvirt_driver import LibvirtDriver
from agents.config import load_config
from agents.network.driver import reset_network_driver
from agents.specs import DiskSpec, DomainSpec, ImageRef, NicSpec
from tests.agents.test_libvirt_driver import URI, data_dir, libvirt_conn, testvm_image  # noqa: F401 - fixtures
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    compute_ports,
    driver,
    link_info,
    make_network,
    net_config,
    state_dir,
)

pytestmark = pytest.mark.libvirt

LEASE_TIMEOUT = 120  # a TCG guest takes ~4 s when idle, far longer on a loaded machine


@pytest.fixture
def compute(data_dir, libvirt_conn, driver):
    """The libvirt driver, with the test's network driver as the process's (the spawn path plugs
    through it)."""
    config = load_config({"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "test-host",
                          "CLOUDMGR_LIBVIRT_URI": URI})
    reset_network_driver(driver)
    drv = LibvirtDriver(config)
    spawned: list[str] = []
    drv.spawned = spawned
    yield drv
    for instance_id in spawned:
        try:
            dom = libvirt_conn.lookupByName(names.domain_name(instance_id))
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    drv.close()
    reset_network_driver()


def wait_for_address(compute, instance_id: str) -> str:
    deadline = time.monotonic() + LEASE_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"CLOUDMGR_TESTVM_IP=(\S+)", compute.console_log(instance_id))
        if found:
            return found.group(1)
        time.sleep(0.2)
    pytest.fail(f"no DHCP lease within {LEASE_TIMEOUT} s; console:\n{compute.console_log(instance_id, 40)}")


def test_guest_gets_its_port_address_through_its_tap(compute, driver, testvm_image, libvirt_conn):
    network = make_network("10.71.0.0/24", ports=1, mtu=1450)
    driver.network_sync(network)
    (port,) = compute_ports(network)
    nic = NicSpec(port_id=port.id, mac_address=port.mac_address, bridge=names.bridge_name(network.id), mtu=1450)
    root = DiskSpec(name="root", size_gb=1, image=ImageRef(id="testvm", source=testvm_image.as_uri()))
    spec = DomainSpec(instance_id=str(uuid.uuid4()), display_name="network test guest", vcpus=1, memory_mib=128,
                      disks=[root], nics=[nic])
    compute.spawned.append(spec.instance_id)
    compute.spawn(spec)  # no port_sync first: the spawn path plugs the tap itself

    tap = link_info(names.tap_name(port.id))
    assert tap["master"] == names.bridge_name(network.id) and tap["mtu"] == 1450 and tap["addresses"] == []
    assert wait_for_address(compute, spec.instance_id) == "10.71.0.11"

    # The domain opens the agent's tap; detaching the NIC leaves the tap to the agent.
    dom = libvirt_conn.lookupByName(names.domain_name(spec.instance_id))
    assert f"<target dev='{names.tap_name(port.id)}' managed='no'/>" in dom.XMLDesc(0)
    spec.nics = []
    compute.sync_interfaces(spec)
    assert "<interface" not in dom.XMLDesc(0)
    assert link_info(names.tap_name(port.id))["index"] == tap["index"]
