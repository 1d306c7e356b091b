"""The metadata service's agent side on the real kernel: the proxy listens on 169.254.169.254
inside a network namespace and signs what it relays; the config drive is a real ISO; and a real
test guest reads both at boot.

The "control plane" here is a small HTTP server in the test that checks the signatures exactly
as ``apps/networks/metadata.py`` does (``agents.network.metadata_signing.verify``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents import names
from agents.compute import designer
from agents.config import load_config
from agents.network import metadata
from agents.network.config import NetworkConfig
from agents.network.metadata import MetadataConfig, MetadataExtension, MetadataProxy, load_metadata_config
from agents.network.metadata_signing import (
    HEADER_ADDRESS,
    HEADER_NETWORK,
    HEADER_SIGNATURE,
    MAX_SKEW_SECONDS,
    MetadataError,
    sign,
    signed_headers,
    verify,
)
from agents.network.metadata_configdrive import ConfigDriveError, build_config_drive
from agents.specs import (
    DiskSpec,
    DomainSpec,
    FixedIPSpec,
    HostNetworkState,
    ImageRef,
    NetworkSpec,
    NicSpec,
    PortSpec,
    SubnetSpec,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = b"test-metadata-secret"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


class Upstream:
    """A stand-in control plane: answers signed requests with what it was told, 403 otherwise."""

    def __init__(self, documents: dict[str, bytes] | None = None) -> None:
        self.documents = documents or {}
        self.seen: list[tuple[str, dict, tuple[str, str] | None]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                identity = verify(SECRET, self.headers)
                upstream.seen.append((self.path, dict(self.headers), identity))
                if identity is None:
                    status, body = 403, b"forbidden"
                elif self.path in upstream.documents:
                    status, body = 200, upstream.documents[self.path]
                elif self.path.endswith("/whoami"):
                    status, body = 200, json.dumps(identity).encode()
                else:
                    status, body = 404, b"no such thing"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.config = MetadataConfig(url=f"http://127.0.0.1:{self.server.server_address[1]}/metadata", secret=SECRET)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream):
    p = MetadataProxy(upstream.config)
    yield p
    p.close()


class Pair:
    """A "DHCP namespace" and a "guest" namespace joined by a veth pair; the guest routes
    169.254.169.254 to the DHCP side, as the DHCP host route makes a real guest do."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.network_id = str(uuid.uuid4())
        self.dhcp = names.dhcp_namespace(self.network_id)
        self.guest = f"mdg-{suffix}"
        for ns in (self.dhcp, self.guest):
            run("ip", "netns", "add", ns)
        run("ip", "-n", self.dhcp, "link", "add", "d0", "type", "veth", "peer", "name", "g0", "netns", self.guest)
        run("ip", "-n", self.dhcp, "addr", "add", "10.77.0.2/24", "dev", "d0")
        run("ip", "-n", self.dhcp, "link", "set", "d0", "up")
        run("ip", "-n", self.guest, "addr", "add", "10.77.0.5/24", "dev", "g0")
        run("ip", "-n", self.guest, "link", "set", "g0", "up")
        run("ip", "-n", self.guest, "route", "add", "169.254.169.254/32", "via", "10.77.0.2")

    def get(self, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
        """A request from the guest: (status, body); status 0 if nothing listens."""
        code = f"""
            import json, sys, urllib.request, urllib.error
            request = urllib.request.Request("http://169.254.169.254{path}", method="{method}",
                                             headers={json.dumps(headers or {})})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
            except OSError:
                status, body = 0, b""
            sys.stdout.write(json.dumps([status, body.decode("latin-1")]))
        """
        out = run("ip", "netns", "exec", self.guest, sys.executable, "-c", textwrap.dedent(code)).stdout
        status, body = json.loads(out)
        return status, body.encode("latin-1")

    def remove(self) -> None:
        for ns in (self.dhcp, self.guest):
            run("ip", "netns", "del", ns, check=False)


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.remove()


# --------------------------------------------------------------------------------- signatures


def test_signatures_bind_network_address_and_time():
    headers = signed_headers(SECRET, "net-1", "10.0.0.5", now=1_000_000)
    assert verify(SECRET, headers, now=1_000_010) == ("net-1", "10.0.0.5")
    assert verify(b"another secret", headers, now=1_000_010) is None
    assert verify(SECRET, {**headers, HEADER_ADDRESS: "10.0.0.6"}, now=1_000_010) is None
    assert verify(SECRET, {**headers, HEADER_NETWORK: "net-2"}, now=1_000_010) is None
    assert verify(SECRET, headers, now=1_000_000 + MAX_SKEW_SECONDS + 1) is None, "too old"
    assert verify(SECRET, {k: v for k, v in headers.items() if k != HEADER_SIGNATURE}, now=1_000_010) is None
    assert verify(b"", headers, now=1_000_010) is None
    assert headers[HEADER_SIGNATURE] == sign(SECRET, "net-1", "10.0.0.5", 1_000_000)


def test_configuration_from_the_environment(tmp_path):
    config = load_metadata_config(tmp_path, {"CLOUDMGR_PUBLIC_URL": "http://cloud.example:8000/"})
    assert config.url == "http://cloud.example:8000/metadata"
    assert config.secret == (tmp_path / "metadata_secret").read_text().encode()
    assert load_metadata_config(tmp_path, {}).url == "http://127.0.0.1:8000/metadata"
    assert load_metadata_config(tmp_path, {"CLOUDMGR_LISTEN": "0.0.0.0:9000"}).url == "http://0.0.0.0:9000/metadata"
    explicit = load_metadata_config(tmp_path, {"CLOUDMGR_METADATA_URL": "https://api.example/md/",
                                               "CLOUDMGR_METADATA_SECRET": "s"})
    assert (explicit.url, explicit.secret) == ("https://api.example/md", b"s")
    with pytest.raises(MetadataError):
        load_metadata_config(tmp_path, {"CLOUDMGR_METADATA_URL": "ftp://nowhere"})


# ------------------------------------------------------------------------------ the proxy, for real


@needs_root
def test_the_proxy_answers_in_the_namespace_with_signed_headers(pair, proxy, upstream):
    assert proxy.ensure(pair.network_id, namespace=pair.dhcp) is True
    upstream.documents["/metadata/openstack/latest/meta_data.json"] = b'{"uuid": "x"}'
    status, body = pair.get("/openstack/latest/meta_data.json?ignored=1")
    assert (status, body) == (200, b'{"uuid": "x"}')
    path, headers, identity = upstream.seen[-1]
    assert path == "/metadata/openstack/latest/meta_data.json"
    assert identity == (pair.network_id, "10.77.0.5"), "the network of the namespace, the connection's source"
    assert headers[HEADER_SIGNATURE] == sign(SECRET, pair.network_id, "10.77.0.5",
                                             headers["X-Cloudmgr-Metadata-Timestamp"])
    # The address is on lo of the namespace, not in the host's main namespace.
    assert "169.254.169.254" in run("ip", "-n", pair.dhcp, "addr", "show", "dev", "lo").stdout
    assert "169.254.169.254/32" not in run("ip", "addr", "show").stdout


@needs_root
def test_the_guest_can_forge_neither_network_nor_address(pair, proxy, upstream):
    proxy.ensure(pair.network_id, namespace=pair.dhcp)
    forged = signed_headers(SECRET, "someone-elses-network", "10.77.0.9")
    forged["X-Forwarded-For"] = "10.77.0.9"
    status, body = pair.get("/whoami", headers=forged)
    assert status == 200
    assert json.loads(body) == [pair.network_id, "10.77.0.5"]
    assert "X-Forwarded-For" not in upstream.seen[-1][1], "nothing the guest sends is relayed but the path"


@needs_root
def test_the_proxy_refuses_what_metadata_never_needs(pair, proxy, upstream):
    proxy.ensure(pair.network_id, namespace=pair.dhcp)
    assert pair.get("/../identity/v3/auth/tokens")[0] == 400
    assert pair.get("/openstack/%2e%2e/x")[0] == 400
    assert pair.get("/openstack/latest/meta_data.json", method="POST")[0] == 405
    assert pair.get("/openstack/latest/nothing")[0] == 404, "the control plane's 404 comes through"
    assert not upstream.seen[:-1], "refused requests never reach the control plane"


@needs_root
def test_a_guest_cannot_hold_all_the_proxys_threads(pair, proxy, upstream):
    proxy.ensure(pair.network_id, namespace=pair.dhcp)
    code = f"""
        import socket, urllib.request
        def get():
            try:
                return urllib.request.urlopen("http://169.254.169.254/whoami", timeout=5).status
            except OSError:
                return 0
        idle = [socket.create_connection(("169.254.169.254", 80)) for _ in range({metadata.MAX_CONCURRENT})]
        import time; time.sleep(0.5)
        refused = get()
        for s in idle:
            s.close()
        time.sleep(0.5)
        print(refused, get())
    """
    out = run("ip", "netns", "exec", pair.guest, sys.executable, "-c", textwrap.dedent(code)).stdout.split()
    assert out == ["0", "200"], "the request past the limit is dropped, and the slots come back"


@needs_root
def test_a_control_plane_that_is_down_is_a_502(pair, upstream):
    down = MetadataProxy(MetadataConfig(url="http://127.0.0.1:9/metadata", secret=SECRET))
    try:
        down.ensure(pair.network_id, namespace=pair.dhcp)
        assert pair.get("/openstack/latest/meta_data.json")[0] == 502
    finally:
        down.close()


@needs_root
def test_ensure_is_idempotent_follows_a_remade_namespace_and_remove_stops(pair, proxy, upstream):
    assert proxy.ensure(pair.network_id, namespace=pair.dhcp) is True
    assert proxy.ensure(pair.network_id, namespace=pair.dhcp) is False
    assert pair.get("/whoami")[0] == 200

    # A resync deletes and remakes the namespace: the old socket would hold the dead one.
    run("ip", "netns", "del", pair.dhcp)
    run("ip", "netns", "add", pair.dhcp)
    run("ip", "-n", pair.guest, "link", "del", "g0")
    run("ip", "-n", pair.dhcp, "link", "add", "d0", "type", "veth", "peer", "name", "g0", "netns", pair.guest)
    run("ip", "-n", pair.dhcp, "addr", "add", "10.77.0.2/24", "dev", "d0")
    run("ip", "-n", pair.dhcp, "link", "set", "d0", "up")
    run("ip", "-n", pair.guest, "addr", "add", "10.77.0.5/24", "dev", "g0")
    run("ip", "-n", pair.guest, "link", "set", "g0", "up")
    run("ip", "-n", pair.guest, "route", "add", "169.254.169.254/32", "via", "10.77.0.2")
    assert pair.get("/whoami")[0] == 0, "nothing listens in the new namespace yet"
    assert proxy.ensure(pair.network_id, namespace=pair.dhcp) is True
    assert pair.get("/whoami")[0] == 200

    assert proxy.remove(pair.network_id) is True
    assert proxy.remove(pair.network_id) is False
    assert pair.get("/whoami")[0] == 0
    assert proxy.networks() == []
    with pytest.raises(MetadataError):
        proxy.ensure(pair.network_id, namespace="no-such-namespace")


@needs_root
def test_the_extension_follows_the_network_spec(pair, proxy, tmp_path):
    config = NetworkConfig(state_dir=tmp_path / "network", owner="test")
    extension = MetadataExtension(config, proxy=proxy)
    dhcp_port = PortSpec(id=str(uuid.uuid4()), network_id=pair.network_id, mac_address="fa:16:3e:00:00:02")
    spec = NetworkSpec(id=pair.network_id, dhcp_port=dhcp_port, metadata=True)
    extension.network_sync(spec)
    assert proxy.networks() == [pair.network_id] and pair.get("/whoami")[0] == 200
    spec.metadata = False
    extension.network_sync(spec)
    assert proxy.networks() == [] and pair.get("/whoami")[0] == 0
    spec.metadata = True
    extension.resync(HostNetworkState(networks=[spec]))
    assert proxy.networks() == [pair.network_id]
    extension.resync(HostNetworkState())
    assert proxy.networks() == []
    extension.network_sync(spec)
    extension.network_delete(pair.network_id)
    assert proxy.networks() == []


# ------------------------------------------------------------------------------------- config drive


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_config_drive_is_an_iso_labelled_config_2(tmp_path):
    if shutil.which("xorriso") is None:
        pytest.fail("xorriso is missing: run scripts/host-setup.sh")
    target = tmp_path / "disk.config"
    files = {"openstack/latest/meta_data.json": _b64(b'{"uuid": "abc"}'),
             "openstack/latest/user_data": _b64(b"#!/bin/sh\necho hi\n"),
             "ec2/latest/meta-data.json": _b64(b"{}")}
    build_config_drive(target, files)
    data = target.read_bytes()
    assert data[0x8001:0x8006] == b"CD001", "an ISO 9660 primary volume descriptor"
    assert data[0x8028:0x8048].rstrip() == b"config-2"
    assert target.stat().st_mode & 0o777 == 0o644
    out = tmp_path / "out"
    run("xorriso", "-osirrox", "on", "-indev", str(target), "-extract", "/", str(out))
    assert (out / "openstack/latest/user_data").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "openstack/latest/meta_data.json").read_bytes() == b'{"uuid": "abc"}'
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("config-drive-*"))

    build_config_drive(target, {"openstack/latest/meta_data.json": _b64(b'{"uuid": "new"}')})  # replaced whole
    run("xorriso", "-osirrox", "on", "-indev", str(target), "-extract", "/", str(tmp_path / "again"))
    assert not (tmp_path / "again/openstack/latest/user_data").exists()


@pytest.mark.parametrize("files", [
    {"../escape": _b64(b"x")},
    {"/absolute": _b64(b"x")},
    {"openstack//double": _b64(b"x")},
    {"openstack/latest/meta_data.json": "not base64!"},
])
def test_config_drive_refuses_bad_files(tmp_path, files):
    with pytest.raises(ConfigDriveError):
        build_config_drive(tmp_path / "disk.config", files)
    assert not (tmp_path / "disk.config").exists()


def test_the_domain_gets_the_config_drive_as_an_ide_cdrom(tmp_path):
    config = load_config({"CLOUDMGR_DATA_DIR": str(tmp_path), "CLOUDMGR_HOSTNAME": "h"})
    spec = DomainSpec(instance_id=str(uuid.uuid4()), display_name="cd", vcpus=1, memory_mib=128,
                      disks=[DiskSpec(name="root", size_gb=1)], config_drive={"a": _b64(b"x")})
    paths = config.instance_paths(spec.instance_id)
    xml = designer.design_guest(spec, paths).to_xml()
    assert f"<source file=\"{paths.config_drive}\" />" in xml or f"<source file=\"{paths.config_drive}\"/>" in xml
    assert "device=\"cdrom\"" in xml and "<target dev=\"hdd\" bus=\"ide\"" in xml and "<readonly" in xml
    spec.config_drive = None
    assert "cdrom" not in designer.design_guest(spec, paths).to_xml()


# --------------------------------------------------------------------------------- a real guest


@pytest.mark.libvirt
@needs_root
def test_a_real_guest_reads_its_metadata_over_the_network_and_from_its_config_drive(testvm_image, upstream):
    """DHCP (the network driver's dnsmasq, with its host route to 169.254.169.254), the proxy in
    the DHCP namespace, and the test guest's boot scripts; the same guest has a config drive."""
    import libvirt

    from agents.compute.libvirt_driver import LibvirtDriver
    from agents.network.driver import LinuxNetworkDriver, reset_network_driver

    state = REPO / "var" / f"test-metadata-{secrets.token_hex(4)}"
    state.mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)  # libvirt-qemu reads the disks under it
    owner = f"test-md-{secrets.token_hex(3)}"
    net_config = NetworkConfig(state_dir=state / "network", owner=owner, external_cidr=None)
    proxy = MetadataProxy(upstream.config)
    network = LinuxNetworkDriver(net_config, extensions=[MetadataExtension(net_config, proxy=proxy)])
    reset_network_driver(network)  # the spawn path plugs the guest's tap through it
    compute = LibvirtDriver(load_config({"CLOUDMGR_DATA_DIR": str(state), "CLOUDMGR_HOSTNAME": owner}))

    prefix = ipaddress.ip_network(f"100.{random.randrange(64, 128)}.{random.randrange(256)}.0/24")
    hosts = list(prefix.hosts())
    network_id, subnet_id, instance_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    guest_port = PortSpec(id=str(uuid.uuid4()), network_id=network_id, mac_address="fa:16:3e:4d:44:01",
                          fixed_ips=[FixedIPSpec(subnet_id, str(hosts[9]))], device_owner="compute:nova")
    spec = NetworkSpec(
        id=network_id, subnets=[SubnetSpec(id=subnet_id, cidr=str(prefix), gateway_ip=str(hosts[0]))],
        dhcp_port=PortSpec(id=str(uuid.uuid4()), network_id=network_id, mac_address="fa:16:3e:4d:44:02",
                           fixed_ips=[FixedIPSpec(subnet_id, str(hosts[1]))], device_owner="network:dhcp"),
        ports=[guest_port], metadata=True,
    )
    upstream.documents.update({
        "/metadata/openstack/latest/meta_data.json": json.dumps({"uuid": instance_id}).encode(),
        "/metadata/openstack/latest/user_data": b"hello from the metadata service\nsecond line\n",
    })
    domain = DomainSpec(
        instance_id=instance_id, display_name="metadata test guest", vcpus=1, memory_mib=128,
        disks=[DiskSpec(name="root", size_gb=1, image=ImageRef(id="testvm-metadata", source=testvm_image.as_uri()))],
        nics=[NicSpec(port_id=guest_port.id, mac_address=guest_port.mac_address, bridge=names.bridge_name(network_id))],
        config_drive={"openstack/latest/meta_data.json": _b64(json.dumps({"uuid": instance_id}).encode()),
                      "openstack/latest/user_data": _b64(b"hello from the config drive\n")},
    )
    try:
        network.network_sync(spec)
        compute.spawn(domain)
        wanted = {
            "CLOUDMGR_TESTVM_IP": str(hosts[9]),
            "CLOUDMGR_TESTVM_INSTANCE": instance_id,
            "CLOUDMGR_TESTVM_USERDATA": "hello from the metadata service",
            "CLOUDMGR_TESTVM_CONFIGDRIVE_INSTANCE": instance_id,
            "CLOUDMGR_TESTVM_CONFIGDRIVE_USERDATA": "hello from the config drive",
        }
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and set(seen) != set(wanted):
            for line in compute.console_log(instance_id).splitlines():
                key, _, value = line.strip().partition("=")
                if key in wanted:
                    seen[key] = value
            time.sleep(0.5)
        asked = [(path, identity) for path, _, identity in upstream.seen]
        assert seen == wanted, f"{compute.console_log(instance_id, 60)}\nthe control plane was asked: {asked}"
        identities = {identity for _, _, identity in upstream.seen}
        assert identities == {(network_id, str(hosts[9]))}
    finally:
        try:
            compute.destroy(instance_id)
        except Exception:  # noqa: BLE001 - the domain may be gone already
            conn = libvirt.open("qemu:///system")
            try:
                conn.lookupByName(names.domain_name(instance_id)).destroy()
            except libvirt.libvirtError:
                pass
            conn.close()
        compute.close()
        network.port_delete(guest_port.id, network_id)
        network.network_delete(network_id)
        reset_network_driver()
        proxy.close()
        shutil.rmtree(state, ignore_errors=True)
