"""The network agent's Celery entry points (on the fake driver: what they return, never raise),
the fake driver itself, and the network settings."""

from __future__ import annotations

import ipaddress

import pytest

from agents import names
from agents.config import ConfigError
from agents.network import NetworkError, tasks
from agents.network.config import load_network_config
from agents.network.driver import NetworkDriver, get_network_driver, reset_network_driver
from agents.network.fake import FakeNetworkDriver
from agents.specs import HostNetworkState, NetworkSpec, NicSpec, PortSpec, RouterSpec, SecurityGroupMembersSpec
from agents.worker import app


@pytest.fixture
def fake():
    driver = FakeNetworkDriver()
    reset_network_driver(driver)
    yield driver
    reset_network_driver()


def test_tasks_are_registered_under_their_names():
    import agents.network.tasks  # noqa: F401 - what the worker's imports load

    for name in (names.TASK_NETWORK_SYNC, names.TASK_NETWORK_DELETE, names.TASK_PORT_SYNC, names.TASK_PORT_DELETE,
                 names.TASK_ROUTER_SYNC, names.TASK_ROUTER_DELETE, names.TASK_HOST_NETWORK_RESYNC,
                 names.TASK_SECURITY_GROUP_MEMBERS):
        assert name in app.tasks
    assert "agents.network.tasks" in app.conf.imports


def test_sync_and_delete_results(fake):
    network = NetworkSpec(id="net-1")
    out = tasks.network_sync(network.to_dict())
    assert out == {"task": names.TASK_NETWORK_SYNC, "kind": "network", "id": "net-1", "host": out["host"], "ok": True,
                   "error": None, "bridge": names.bridge_name("net-1"), "dhcp": False}
    port = PortSpec(id="port-1", network_id="net-1", mac_address="fa:16:3e:00:00:01")
    assert tasks.port_sync(port.to_dict())["device"] == names.tap_name("port-1")
    assert tasks.router_sync(RouterSpec(id="router-1").to_dict())["ok"]
    assert fake.networks["net-1"] == network and fake.ports["port-1"] == port and "router-1" in fake.routers

    assert tasks.port_delete({"port_id": "port-1", "network_id": "net-1"})["ok"]
    assert tasks.router_delete({"router_id": "router-1"})["id"] == "router-1"
    assert tasks.network_delete({"network_id": "net-1"})["ok"]
    assert not fake.networks and not fake.ports and not fake.routers
    assert [op for op, _ in fake.calls] == ["network_sync", "port_sync", "router_sync", "port_delete",
                                            "router_delete", "network_delete"]


def test_bad_input_is_a_failed_result(fake):
    out = tasks.network_sync({**NetworkSpec(id="n").to_dict(), "version": 99})
    assert out["ok"] is False and "version 99" in out["error"] and out["id"] == "n"
    out = tasks.router_sync({"id": "r", "nonsense": 1})
    assert out["ok"] is False and out["error"].startswith("invalid router spec")
    out = tasks.port_delete({"port_id": "p"})
    assert out == {**out, "ok": False, "error": "invalid port reference: network_id missing"}
    assert tasks.resync("not a dict")["ok"] is False
    assert fake.calls == []


def test_driver_failures_are_failed_results(fake, monkeypatch):
    fake.fail_next("network_sync", "no bridge for you")
    out = tasks.network_sync(NetworkSpec(id="n").to_dict())
    assert (out["ok"], out["error"]) == (False, "no bridge for you")

    def broken(spec):
        raise RuntimeError("boom")

    monkeypatch.setattr(fake, "router_sync", broken)
    out = tasks.router_sync(RouterSpec(id="r").to_dict())
    assert out["ok"] is False and out["error"] == "internal error in the network agent: RuntimeError: boom"


def test_resync_result_and_fake_leftovers(fake):
    tasks.network_sync(NetworkSpec(id="old").to_dict())
    state = HostNetworkState(networks=[NetworkSpec(id="new")])
    out = tasks.resync(state.to_dict())
    assert out["ok"] and out["kind"] == "host" and out["removed"] == [names.bridge_name("old")]
    assert set(fake.networks) == {"new"}

    class HalfBroken(FakeNetworkDriver):
        def resync(self, state):
            return {"removed": [], "errors": ["router r: no external bridge", "network n: dnsmasq died"]}

    reset_network_driver(HalfBroken())
    out = tasks.resync(state.to_dict())
    assert out["ok"] is False and out["error"] == "router r: no external bridge; network n: dnsmasq died"


def test_misconfigured_agent_answers(monkeypatch):
    reset_network_driver()
    monkeypatch.setenv("CLOUDMGR_NETWORK_DRIVER", "ovs")
    from agents.network.config import get_network_config

    get_network_config.cache_clear()
    try:
        out = tasks.network_delete({"network_id": "n"})
    finally:
        get_network_config.cache_clear()
        reset_network_driver()
    assert out["ok"] is False and "CLOUDMGR_NETWORK_DRIVER must be one of linux, fake" in out["error"]


def test_fake_driver_is_chosen_by_the_environment(monkeypatch):
    from agents.network.config import get_network_config

    monkeypatch.setenv("CLOUDMGR_NETWORK_DRIVER", "fake")
    get_network_config.cache_clear()
    reset_network_driver()
    try:
        driver = get_network_driver()
        assert isinstance(driver, FakeNetworkDriver) and isinstance(driver, NetworkDriver)
        driver.plug_nics([NicSpec(port_id="p", mac_address="fa:16:3e:00:00:01", bridge="brqx")])
        assert driver.plugged[names.tap_name("p")].bridge == "brqx"
        driver.fail_next("plug_nic", "no tap")
        with pytest.raises(NetworkError, match="no tap"):
            driver.plug_nics([NicSpec(port_id="q", mac_address="fa:16:3e:00:00:02", bridge="brqx")])
    finally:
        get_network_config.cache_clear()
        reset_network_driver()


def test_network_settings():
    config = load_network_config({"CLOUDMGR_DATA_DIR": "/srv/cloud", "CLOUDMGR_HOSTNAME": "node7"})
    assert config.state_dir.as_posix() == "/srv/cloud/network" and config.owner_tag == "cloudmgr:node7"
    assert config.external_bridge == "br-ex" and config.external_cidr == ipaddress.IPv4Interface("172.24.4.1/24")
    assert dict(config.bridge_mappings) == {"public": "br-ex"} and config.driver == "linux"

    config = load_network_config({"CLOUDMGR_EXTERNAL_BRIDGE": "br-pub", "CLOUDMGR_EXTERNAL_CIDR": "",
                                  "CLOUDMGR_BRIDGE_MAPPINGS": "public:br-pub, dc1:br-dc1"})
    assert config.external_cidr is None and dict(config.bridge_mappings) == {"public": "br-pub", "dc1": "br-dc1"}

    for bad, message in (
        ({"CLOUDMGR_EXTERNAL_CIDR": "172.24.4.0/24"}, "host address"),
        ({"CLOUDMGR_EXTERNAL_CIDR": "nonsense"}, "IPv4 address with a prefix"),
        ({"CLOUDMGR_EXTERNAL_BRIDGE": "a-name-far-too-long"}, "not a valid interface name"),
        ({"CLOUDMGR_BRIDGE_MAPPINGS": "public"}, "is not physnet:bridge"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_network_config(bad)


def test_extensions_follow_the_driver_and_their_errors_fail_the_task(net_config_env, tmp_path):
    """An extension's hooks run with the specs; its own exceptions become a failed result."""
    from agents.network.driver import LinuxNetworkDriver, NetworkExtension

    class Recorder(NetworkExtension):
        calls: list = []

        def port_sync(self, spec):
            self.calls.append(("port_sync", spec.id))
            raise ValueError("the filter does not fit")

        def resync(self, state):
            self.calls.append(("resync", len(state.ports)))

    extension = Recorder(net_config_env)
    driver = LinuxNetworkDriver(net_config_env, extensions=[extension])
    reset_network_driver(driver)
    try:
        port = PortSpec(id="port-x", network_id="net-x", mac_address="fa:16:3e:00:00:09", device_owner="network:dhcp")
        out = tasks.port_sync(port.to_dict())
        assert out["ok"] is False and out["error"] == "Recorder: the filter does not fit"
        assert tasks.resync(HostNetworkState().to_dict())["ok"]
    finally:
        reset_network_driver()
    assert Recorder.calls == [("port_sync", "port-x"), ("resync", 0)]


@pytest.fixture
def net_config_env(tmp_path):
    """Settings for a Linux driver that touches nothing of the host here (a DHCP port makes no tap)."""
    from agents.network.config import NetworkConfig

    return NetworkConfig(state_dir=tmp_path / "network", owner="tasks-test-" + tmp_path.name[-8:],
                         external_cidr=None, bridge_mappings={})


def test_security_group_members_reach_the_driver(fake):
    spec = SecurityGroupMembersSpec(id="sg-1", members=["10.0.0.5", "10.0.0.6"], generation=5)
    out = tasks.security_group_members(spec.to_dict())
    assert out["ok"] and out["kind"] == "security_group" and out["id"] == "sg-1"
    assert fake.group_members == {"sg-1": ["10.0.0.5", "10.0.0.6"]}
    assert not tasks.security_group_members({"id": "sg-1", "members": [], "version": 99})["ok"]


def test_a_message_superseded_by_a_newer_arrival_is_dropped_without_waiting(fake):
    """Two member updates of one group are in flight: the older, still waiting for the group's
    lock when the newer arrived, is dropped; the newer is applied."""
    import threading

    older = SecurityGroupMembersSpec(id="sg-burst", members=["10.0.0.1"], generation=100)
    newer = SecurityGroupMembersSpec(id="sg-burst", members=["10.0.0.1", "10.0.0.2"], generation=200)
    outcomes = {}
    with tasks._ordering("security_group:sg-burst"):  # a third message is being applied
        waiting = threading.Thread(target=lambda: outcomes.setdefault("older", tasks.security_group_members(
            older.to_dict())))
        waiting.start()
        while "security_group:sg-burst" not in tasks._ordering._locks or \
                tasks._ordering._locks["security_group:sg-burst"][1] < 2:
            threading.Event().wait(0.01)  # the older message waits for the lock
        arrived = threading.Thread(target=lambda: outcomes.__setitem__("newer", tasks.security_group_members(
            newer.to_dict())))
        arrived.start()
        while tasks._arrived.get(("security_group", "sg-burst"), 0) < 200:
            threading.Event().wait(0.01)
    waiting.join(timeout=10)
    arrived.join(timeout=10)
    assert outcomes["older"]["stale"], "the older message was dropped"
    assert not outcomes["newer"].get("stale")
    assert fake.group_members["sg-burst"] == ["10.0.0.1", "10.0.0.2"]
    assert [call for call in fake.calls if call[0] == "security_group_members"] == [
        ("security_group_members", "sg-burst")], "applied once"
    # Arriving after the newer one, an older message is dropped at once.
    assert tasks.security_group_members(older.to_dict())["stale"]
