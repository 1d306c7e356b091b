"""Settings of the network data plane, read from the environment (see :mod:`agents.config`).

==============================  ===================  ================================================
Variable                        Default              Meaning
==============================  ===================  ================================================
``CLOUDMGR_NETWORK_DRIVER``     ``linux``            ``linux`` (the kernel) or ``fake`` (unit tests)
``CLOUDMGR_EXTERNAL_BRIDGE``    ``br-ex``            the host bridge of the external network
``CLOUDMGR_EXTERNAL_CIDR``      ``172.24.4.1/24``    the host's address on it, and so its range;
                                                     empty: this host has no external network
``CLOUDMGR_BRIDGE_MAPPINGS``    ``public:<bridge>``  ``physnet:bridge,...``: the bridge a flat
                                                     network of that physical network uplinks to
==============================  ===================  ================================================

Everything the agent makes in the kernel carries an owner tag (``cloudmgr:<hostname>``, the
interface alias of bridges, taps, veths and of each namespace's ``lo``), so a resync removes only
this agent's leftovers, never another cloud's on the same machine (the test suite runs several).
Host-local files live under ``<data>/network/`` (``dhcp/<network_id>/``: dnsmasq's files).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import ConfigError, load_config

__all__ = ["NETWORK_DRIVERS", "NetworkConfig", "get_network_config", "load_network_config"]

NETWORK_DRIVERS = ("linux", "fake")
DEFAULT_EXTERNAL_BRIDGE = "br-ex"
DEFAULT_EXTERNAL_CIDR = "172.24.4.1/24"  # devstack's public range

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class NetworkConfig:
    state_dir: Path
    owner: str  # this agent's hostname
    driver: str = "linux"
    external_bridge: str = DEFAULT_EXTERNAL_BRIDGE
    external_cidr: ipaddress.IPv4Interface | None = ipaddress.IPv4Interface(DEFAULT_EXTERNAL_CIDR)
    bridge_mappings: Mapping[str, str] = field(default_factory=lambda: {"public": DEFAULT_EXTERNAL_BRIDGE})

    @property
    def owner_tag(self) -> str:
        """The interface alias that marks a kernel object as this agent's."""
        return f"cloudmgr:{self.owner}"

    @property
    def dhcp_dir(self) -> Path:
        return self.state_dir / "dhcp"


def _interface_name(value: str, variable: str) -> str:
    if not _IFNAME.match(value):
        raise ConfigError(f"{variable}: {value!r} is not a valid interface name (at most 15 characters)")
    return value


def _mappings(raw: str, default_bridge: str) -> dict[str, str]:
    if not raw.strip():
        return {"public": default_bridge}
    mappings: dict[str, str] = {}
    for item in raw.split(","):
        physnet, sep, bridge = item.strip().partition(":")
        if not sep or not physnet.strip():
            raise ConfigError(f"CLOUDMGR_BRIDGE_MAPPINGS: {item!r} is not physnet:bridge")
        mappings[physnet.strip()] = _interface_name(bridge.strip(), "CLOUDMGR_BRIDGE_MAPPINGS")
    return mappings


def load_network_config(environ: Mapping[str, str] | None = None) -> NetworkConfig:
    env = os.environ if environ is None else environ
    base = load_config(env)
    driver = env.get("CLOUDMGR_NETWORK_DRIVER", "linux").strip() or "linux"
    if driver not in NETWORK_DRIVERS:
        raise ConfigError(f"CLOUDMGR_NETWORK_DRIVER must be one of {', '.join(NETWORK_DRIVERS)}, not {driver!r}")
    bridge = _interface_name(
        env.get("CLOUDMGR_EXTERNAL_BRIDGE", "").strip() or DEFAULT_EXTERNAL_BRIDGE, "CLOUDMGR_EXTERNAL_BRIDGE"
    )
    raw_cidr = env.get("CLOUDMGR_EXTERNAL_CIDR", DEFAULT_EXTERNAL_CIDR).strip()
    cidr = None
    if raw_cidr:
        try:
            cidr = ipaddress.IPv4Interface(raw_cidr)
        except ValueError:
            raise ConfigError(
                f"CLOUDMGR_EXTERNAL_CIDR must be an IPv4 address with a prefix, not {raw_cidr!r}") from None
        if cidr.network.prefixlen > 30 or cidr.ip in (cidr.network.network_address, cidr.network.broadcast_address):
            raise ConfigError(
                f"CLOUDMGR_EXTERNAL_CIDR {raw_cidr!r} must be a host address in a network of 4+ addresses")
    return NetworkConfig(
        state_dir=base.data_dir / "network",
        owner=base.hostname,
        driver=driver,
        external_bridge=bridge,
        external_cidr=cidr,
        bridge_mappings=_mappings(env.get("CLOUDMGR_BRIDGE_MAPPINGS", ""), bridge),
    )


@functools.lru_cache(maxsize=1)
def get_network_config() -> NetworkConfig:
    """The process-wide network settings (read once; ``get_network_config.cache_clear()`` re-reads)."""
    return load_network_config()
