"""Settings of the volume backends, read from the environment (see :mod:`agents.config`).

==============================  ======================  =============================================
Variable                        Default                 Meaning
==============================  ======================  =============================================
``CLOUDMGR_VOLUME_DRIVER``      ``real``                ``real``, or ``fake`` (in memory, unit tests)
``CLOUDMGR_VOLUME_DIR``         ``<data>/volumes``      the file backend's pool directory
``CLOUDMGR_VOLUME_GROUP``       (none)                  the LVM backend's volume group; unset: no LVM
``CLOUDMGR_THIN_POOL``          ``cloudmgr-thinpool``   the thin pool LV in that group
``CLOUDMGR_BACKUP_DIR``         ``<data>/backups``      the backup store (a directory)
``CLOUDMGR_NBD_ADDRESS``        (none)                  where NBD exports listen, and what compute
                                                        hosts connect to; unset: no NBD exports
``CLOUDMGR_NBD_PORTS``          ``10809-10999``         the TCP ports NBD exports may use
==============================  ======================  =============================================
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agents.config import ConfigError, load_config

__all__ = ["VOLUME_DRIVERS", "VolumeConfig", "get_volume_config", "load_volume_config"]

VOLUME_DRIVERS = ("real", "fake")
DEFAULT_THIN_POOL = "cloudmgr-thinpool"
DEFAULT_NBD_PORTS = (10809, 10999)

# LVM names: letters, digits and "+_.-", not starting with "-" (lvm(8)).
_LVM_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")


@dataclass(frozen=True)
class VolumeConfig:
    hostname: str
    data_dir: Path
    volume_dir: Path
    backup_dir: Path
    image_cache_dir: Path
    libvirt_uri: str
    driver: str = "real"
    volume_group: str | None = None
    thin_pool: str = DEFAULT_THIN_POOL
    nbd_address: str | None = None
    nbd_ports: tuple[int, int] = DEFAULT_NBD_PORTS

    @property
    def run_dir(self) -> Path:
        """Locks, and the state of running exports and views (pid files, QMP sockets): short
        paths, because a UNIX socket's path is limited to 107 bytes."""
        return self.data_dir / "run" / "vol"


def _lvm_name(value: str, variable: str) -> str:
    if not _LVM_NAME.match(value) or value in (".", ".."):
        raise ConfigError(f"{variable}: {value!r} is not a valid LVM name")
    return value


def _ports(raw: str) -> tuple[int, int]:
    low, sep, high = raw.partition("-")
    try:
        ports = (int(low), int(high if sep else low))
    except ValueError:
        raise ConfigError(f"CLOUDMGR_NBD_PORTS must be a port or a range LOW-HIGH, not {raw!r}") from None
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise ConfigError(f"CLOUDMGR_NBD_PORTS {raw!r} is not a range of TCP ports")
    return ports


def _address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"CLOUDMGR_NBD_ADDRESS must be an IP address of this host, not {raw!r}") from None


def _directory(env: Mapping[str, str], variable: str, default: Path) -> Path:
    raw = env.get(variable, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


def load_volume_config(environ: Mapping[str, str] | None = None) -> VolumeConfig:
    env = os.environ if environ is None else environ
    base = load_config(env)
    driver = env.get("CLOUDMGR_VOLUME_DRIVER", "real").strip() or "real"
    if driver not in VOLUME_DRIVERS:
        raise ConfigError(f"CLOUDMGR_VOLUME_DRIVER must be one of {', '.join(VOLUME_DRIVERS)}, not {driver!r}")
    group = env.get("CLOUDMGR_VOLUME_GROUP", "").strip()
    address = env.get("CLOUDMGR_NBD_ADDRESS", "").strip()
    return VolumeConfig(
        hostname=base.hostname,
        data_dir=base.data_dir,
        volume_dir=_directory(env, "CLOUDMGR_VOLUME_DIR", base.data_dir / "volumes"),
        backup_dir=_directory(env, "CLOUDMGR_BACKUP_DIR", base.data_dir / "backups"),
        image_cache_dir=base.image_cache_dir,
        libvirt_uri=base.libvirt_uri,
        driver=driver,
        volume_group=_lvm_name(group, "CLOUDMGR_VOLUME_GROUP") if group else None,
        thin_pool=_lvm_name(env.get("CLOUDMGR_THIN_POOL", "").strip() or DEFAULT_THIN_POOL, "CLOUDMGR_THIN_POOL"),
        nbd_address=_address(address) if address else None,
        nbd_ports=_ports(env.get("CLOUDMGR_NBD_PORTS", "").strip() or "%d-%d" % DEFAULT_NBD_PORTS),
    )


@functools.lru_cache(maxsize=1)
def get_volume_config() -> VolumeConfig:
    """The process-wide volume settings (read once; ``get_volume_config.cache_clear()`` re-reads)."""
    return load_volume_config()
