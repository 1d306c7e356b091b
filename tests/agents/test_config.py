from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agents.config import ConfigError, load_config


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    assert config.data_dir == tmp_path / "var"
    assert config.data_dir.is_absolute()
    assert config.hostname == socket.gethostname()
    assert config.virt_type == "qemu"
    assert config.broker_url == "redis://127.0.0.1:6379/0"
    assert config.libvirt_uri == "qemu:///system"
    assert config.compute_driver == "libvirt"
    assert config.heartbeat_interval == 5
    assert config.max_concurrent_starts == (os.cpu_count() or 1)


def test_environment_and_paths(tmp_path):
    config = load_config(
        {
            "CLOUDMGR_DATA_DIR": str(tmp_path / "data"),
            "CLOUDMGR_HOSTNAME": "node7",
            "CLOUDMGR_VIRT_TYPE": "kvm",
            "CELERY_BROKER_URL": "redis://redis:6379/3",
            "CLOUDMGR_LIBVIRT_URI": "test:///default",
            "CLOUDMGR_COMPUTE_DRIVER": "fake",
            "CLOUDMGR_HEARTBEAT_INTERVAL": "0.5",
            "CLOUDMGR_MAX_CONCURRENT_STARTS": "3",
        }
    )
    assert config.max_concurrent_starts == 3
    assert (config.hostname, config.virt_type, config.compute_driver) == ("node7", "kvm", "fake")
    assert config.broker_url == "redis://redis:6379/3" and config.libvirt_uri == "test:///default"
    assert config.heartbeat_interval == 0.5
    paths = config.instance_paths("abc-1")
    assert paths.instance_dir == tmp_path / "data" / "instances" / "abc-1"
    assert paths.root_disk == paths.instance_dir / "disk.qcow2"
    assert paths.console_log == paths.instance_dir / "console.log"
    assert config.cached_image_path("img-1") == tmp_path / "data" / "cache" / "images" / "img-1"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".", "..", "x" * 200])
def test_ids_cannot_escape_the_data_dir(bad):
    config = load_config({"CLOUDMGR_DATA_DIR": "/srv/cloudmgr"})
    with pytest.raises(ValueError):
        config.instance_paths(bad)
    with pytest.raises(ValueError):
        config.cached_image_path(bad)


@pytest.mark.parametrize(
    "env",
    [
        {"CLOUDMGR_VIRT_TYPE": "xen"},
        {"CLOUDMGR_COMPUTE_DRIVER": "docker"},
        {"CLOUDMGR_HEARTBEAT_INTERVAL": "soon"},
        {"CLOUDMGR_HEARTBEAT_INTERVAL": "0"},
        {"CLOUDMGR_MAX_CONCURRENT_STARTS": "0"},
        {"CLOUDMGR_MAX_CONCURRENT_STARTS": "two"},
    ],
)
def test_invalid_settings(env):
    with pytest.raises(ConfigError):
        load_config(env)


def test_relative_data_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config({"CLOUDMGR_DATA_DIR": "state"}).data_dir == Path(tmp_path, "state")
