"""The metadata service's agent side: ``169.254.169.254:80`` in every network's DHCP namespace,
proxied to the control plane with signed headers.

A guest reaches 169.254.169.254 through the host route that DHCP hands out (its next hop is the
network's DHCP port); the address itself sits on ``lo`` of the ``qdhcp-<network>`` namespace,
because on a bridge of the host's main namespace it would take over the host's own route to
that address. One agent process serves every namespace: a short-lived thread enters the
namespace (``setns``), creates the listening socket there and leaves; the socket stays in that
namespace, while the threads that serve it (and their connections to the control plane) are in
the host's namespace.

The guest can choose neither who it is nor which network it is on: the proxy sends the control
plane only the path it asked for, plus the network (from the namespace the request came in by)
and the source address of the TCP connection, signed with an HMAC of a secret shared with the
control plane (the idea of Neutron's ``metadata_proxy_shared_secret``, OSSN-0074). The signature
also covers a timestamp, so that a signed request seen once cannot be replayed for long.

Configuration (environment; the control plane reads the same secret):

==============================  ========================================================
``CLOUDMGR_METADATA_SECRET``    the shared secret; if unset, ``<data dir>/metadata_secret``,
                                generated once (mode 0600) by whichever side needs it first
``CLOUDMGR_METADATA_URL``       where the control plane answers; default
                                ``$CLOUDMGR_PUBLIC_URL/metadata`` (``http://$CLOUDMGR_LISTEN``,
                                ``127.0.0.1:8000`` when neither is set)
==============================  ========================================================
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from agents import names
from agents.network import linux
from agents.network.driver import NetworkExtension
from agents.network.metadata_signing import MetadataError, load_secret, signed_headers
from agents.specs import HostNetworkState, NetworkSpec

__all__ = ["METADATA_ADDRESS", "MetadataConfig", "MetadataExtension", "MetadataProxy", "get_proxy",
           "load_metadata_config"]

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
UPSTREAM_TIMEOUT = 15
CLIENT_TIMEOUT = 10
MAX_BODY = 4 << 20
MAX_CONCURRENT = 32  # requests in flight per network
# Metadata paths only ever need these characters; anything else (dot segments, escapes) is refused.
_PATH = re.compile(r"^/[A-Za-z0-9._/=-]*$")


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MetadataConfig:
    url: str  # the control plane's metadata endpoint, without a trailing slash
    secret: bytes


def load_metadata_config(data_dir: Path | str, environ: Mapping[str, str] | None = None) -> MetadataConfig:
    env = os.environ if environ is None else environ
    url = (env.get("CLOUDMGR_METADATA_URL") or "").strip()
    if not url:
        public = (env.get("CLOUDMGR_PUBLIC_URL") or "").strip() or f"http://{env.get('CLOUDMGR_LISTEN') or '127.0.0.1:8000'}"
        url = public.rstrip("/") + "/metadata"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MetadataError(f"CLOUDMGR_METADATA_URL must be an http(s) URL, not {url!r}")
    return MetadataConfig(url=url.rstrip("/"), secret=load_secret(data_dir, env))


# --------------------------------------------------------------------------------- the namespaces


def _namespace_id(namespace: str) -> tuple[int, int] | None:
    """Identity of the namespace now at that name: a namespace deleted and made again differs."""
    try:
        st = os.stat(linux.NETNS_DIR / namespace)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _listen_here() -> socket.socket:
    """In the current thread's namespace: put 169.254.169.254/32 on ``lo`` and listen on it."""
    from pyroute2 import IPRoute  # netlink, only needed here

    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=lo, family=socket.AF_INET)}
        if METADATA_ADDRESS not in have:
            ipr.addr("add", index=lo, address=METADATA_ADDRESS, prefixlen=32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((METADATA_ADDRESS, METADATA_PORT))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------------------- the proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "cloudmgr-metadata"
    sys_version = ""
    timeout = CLIENT_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("metadata %s: " + format, self.server.network_id, *args)

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].split("#", 1)[0] or "/"
        if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
            self._reply(400, b"Bad request path\n")
            return
        status, content_type, body = self.server.upstream(path, self.client_address[0])
        self._reply(status, body, content_type)

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._reply(405, b"Only GET and HEAD are allowed\n")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, sock: socket.socket, network_id: str, config: MetadataConfig) -> None:
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.network_id = network_id
        self.config = config
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def process_request(self, request, client_address) -> None:
        # A guest opening connections by the hundred must not take the agent's threads.
        if not self._slots.acquire(blocking=False):
            log.warning("metadata on network %s: too many requests at once; dropping one from %s",
                        self.network_id, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def upstream(self, path: str, address: str) -> tuple[int, str, bytes]:
        """Ask the control plane for ``path`` on behalf of ``address``: (status, type, body)."""
        url = urlsplit(self.config.url)
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = connection_class(url.hostname, url.port, timeout=UPSTREAM_TIMEOUT)
        headers = signed_headers(self.config.secret, self.network_id, str(ipaddress.ip_address(address)))
        try:
            conn.request("GET", url.path + path, headers=headers)
            response = conn.getresponse()
            body = response.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return 502, "text/plain; charset=utf-8", b"Metadata too large\n"
            return response.status, response.getheader("Content-Type") or "text/plain; charset=utf-8", body
        except TimeoutError:
            log.warning("metadata for %s on network %s: the control plane timed out", address, self.network_id)
            return 504, "text/plain; charset=utf-8", b"The metadata service timed out\n"
        except (OSError, http.client.HTTPException) as exc:
            log.warning("metadata for %s on network %s: %s", address, self.network_id, exc)
            return 502, "text/plain; charset=utf-8", b"The metadata service is unavailable\n"
        finally:
            conn.close()


@dataclass
class _Listener:
    server: _Server
    thread: threading.Thread
    namespace: str
    namespace_id: tuple[int, int] | None


class MetadataProxy:
    """The metadata listeners of this host, one per network namespace; thread-safe, idempotent."""

    def __init__(self, config: MetadataConfig) -> None:
        self.config = config
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()

    def ensure(self, network_id: str, namespace: str | None = None) -> bool:
        """Serve metadata in the network's DHCP namespace (it must exist); True if newly started.

        A namespace deleted and made again (resync) gets a new listener: the old socket would
        keep the dead namespace alive and never see a guest again."""
        namespace = namespace or names.dhcp_namespace(network_id)
        with self._lock:
            current = _namespace_id(namespace)
            if current is None:
                raise MetadataError(f"namespace {namespace} does not exist")
            listener = self._listeners.get(network_id)
            if listener is not None:
                if listener.namespace == namespace and listener.namespace_id == current and listener.thread.is_alive():
                    return False
                self._stop(network_id)
            try:
                sock = linux.in_namespace(namespace, _listen_here)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise MetadataError(f"{METADATA_ADDRESS}:{METADATA_PORT} is already taken in {namespace}") from None
                raise MetadataError(f"cannot listen on {METADATA_ADDRESS}:{METADATA_PORT} in {namespace}: {exc}") from None
            server = _Server(sock, network_id, self.config)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                      name=f"metadata-{network_id[:8]}", daemon=True)
            thread.start()
            self._listeners[network_id] = _Listener(server, thread, namespace, current)
        log.info("metadata: serving network %s in %s", network_id, namespace)
        return True

    def _stop(self, network_id: str) -> bool:
        listener = self._listeners.pop(network_id, None)
        if listener is None:
            return False
        listener.server.shutdown()
        listener.server.server_close()
        listener.thread.join(timeout=5)
        return True

    def remove(self, network_id: str) -> bool:
        """Stop serving the network; True if it was served."""
        with self._lock:
            stopped = self._stop(network_id)
        if stopped:
            log.info("metadata: stopped serving network %s", network_id)
        return stopped

    def sync(self, network_ids: Iterable[str]) -> None:
        """Serve exactly ``network_ids`` (whose namespaces exist); stop the others."""
        wanted = set(network_ids)
        for network_id in set(self.networks()) - wanted:
            self.remove(network_id)
        errors = []
        for network_id in sorted(wanted):
            try:
                self.ensure(network_id)
            except MetadataError as exc:
                errors.append(str(exc))
        if errors:
            raise MetadataError("; ".join(errors))

    def networks(self) -> list[str]:
        with self._lock:
            return list(self._listeners)

    def close(self) -> None:
        with self._lock:
            for network_id in list(self._listeners):
                self._stop(network_id)


_proxy: MetadataProxy | None = None
_proxy_lock = threading.Lock()


def get_proxy(data_dir: Path | str) -> MetadataProxy:
    """The process's proxy (its listeners are the process's), configured on first use."""
    global _proxy
    with _proxy_lock:
        if _proxy is None:
            _proxy = MetadataProxy(load_metadata_config(data_dir))
        return _proxy


def _serves_metadata(spec: NetworkSpec) -> bool:
    return spec.metadata and spec.dhcp_port is not None


class MetadataExtension(NetworkExtension):
    """The network driver's hook (``agents.network.driver.EXTENSIONS``): a network's DHCP
    namespace serves metadata while its spec says so."""

    def __init__(self, config, proxy: MetadataProxy | None = None) -> None:
        super().__init__(config)
        # The secret file lives in the data dir, where the control plane finds it too.
        self.proxy = proxy or get_proxy(config.state_dir.parent)

    def network_sync(self, spec: NetworkSpec) -> None:
        if _serves_metadata(spec):
            self.proxy.ensure(spec.id)
        else:
            self.proxy.remove(spec.id)

    def network_delete(self, network_id: str) -> None:
        self.proxy.remove(network_id)

    def resync(self, state: HostNetworkState) -> None:
        self.proxy.sync(spec.id for spec in state.networks if _serves_metadata(spec))
