"""The web-download import: fetch an image from a URL, without becoming a way into the cloud's
own network (SSRF).

A URL is fetched only if:
- its scheme is http or https, with no user info;
- its host is on CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS (`example.com`, `.example.com` for any of its
  subdomains, or `*`) and its port on CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS (default 80 and 443; `*`);
- every address the host resolves to is globally routable (no loopback, link-local, private,
  shared, multicast or reserved address, IPv4-mapped ones included), unless it lies in one of
  CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS (CIDRs an operator allows on purpose).

The connection goes to the address that was checked (no second DNS lookup that could answer
differently), with the host name kept for the Host header and TLS (SNI, certificate check).
Redirects are followed by hand, at most 5, each hop checked the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from django.conf import settings

from apps.images.uploads import CHUNK
from cloudmgr.exceptions import ValidationError

MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


class WebDownloadRefused(ValidationError):
    pass


@dataclass
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


def _host_allowed(host: str) -> bool:
    host = host.lower().rstrip(".")
    for pattern in settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith(".") and host.endswith(pattern):
            return True
    return False


def _port_allowed(port: int) -> bool:
    ports = settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS
    return "*" in ports or str(port) in ports


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS:
        if ip in ipaddress.ip_network(network, strict=False):
            return True
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> Target:
    """The URL's target if it may be fetched, else WebDownloadRefused saying why."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebDownloadRefused(f"{url!r} is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebDownloadRefused("Only http and https URLs can be imported.")
    if parts.username or parts.password:
        raise WebDownloadRefused("URLs with credentials cannot be imported.")
    host = parts.hostname or ""
    if not host:
        raise WebDownloadRefused(f"{url!r} names no host.")
    port = port or (443 if scheme == "https" else 80)
    if not _host_allowed(host):
        raise WebDownloadRefused(f"Importing from {host} is not allowed on this cloud.")
    if not _port_allowed(port):
        raise WebDownloadRefused(f"Importing from port {port} is not allowed on this cloud.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebDownloadRefused(f"Cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    refused = [a for a in addresses if not _address_allowed(a)]
    if not addresses or refused:
        raise WebDownloadRefused(
            f"Importing from {host} is not allowed: it resolves to an internal address ({', '.join(refused)})."
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, address=addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target):
        super().__init__(target.host, target.port, timeout=READ_TIMEOUT)
        self._address = target.address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), CONNECT_TIMEOUT)
        self.sock.settimeout(READ_TIMEOUT)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target):
        super().__init__(target.host, target.port, timeout=READ_TIMEOUT, context=ssl.create_default_context())
        self._address = target.address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), CONNECT_TIMEOUT)
        sock.settimeout(READ_TIMEOUT)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Download:
    response: http.client.HTTPResponse
    length: int | None

    def chunks(self) -> Iterator[bytes]:
        try:
            while data := self.response.read(CHUNK):
                yield data
        except (OSError, http.client.HTTPException) as exc:
            raise WebDownloadRefused(f"The download was interrupted: {exc or type(exc).__name__}") from exc


@contextlib.contextmanager
def open_url(url: str) -> Iterator[Download]:
    """GET the URL (checked, pinned, redirects followed by hand) and yield its body."""
    for _ in range(MAX_REDIRECTS + 1):
        target = check_url(url)
        connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = connection_class(target)
        try:
            try:
                conn.request("GET", target.path, headers={"User-Agent": "cloudmgr-image-import", "Accept": "*/*"})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise WebDownloadRefused(f"Cannot download {target.url}: {exc or type(exc).__name__}") from exc
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise WebDownloadRefused(f"{target.url} answered {response.status} {response.reason}.")
            yield Download(response=response, length=response.length)
            return
        finally:
            conn.close()
    raise WebDownloadRefused(f"Too many redirects (more than {MAX_REDIRECTS}).")
