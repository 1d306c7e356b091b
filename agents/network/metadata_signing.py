"""The signed headers with which a metadata proxy vouches for a guest's request, and the secret
they are signed with: shared by the agents' proxies (:mod:`agents.network.metadata`) and the
control plane's endpoint (``apps/networks/metadata.py``), stdlib only so the web process imports
nothing else of the agents.

The signature is a hex HMAC-SHA256, with the shared secret, of the network the request came in
by, the source address of its connection and a Unix timestamp; it is accepted for
``MAX_SKEW_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from agents.network import NetworkError

__all__ = [
    "HEADER_ADDRESS", "HEADER_NETWORK", "HEADER_SIGNATURE", "HEADER_TIMESTAMP", "MAX_SKEW_SECONDS", "MetadataError",
    "load_secret", "sign", "signed_headers", "verify",
]

SECRET_FILE = "metadata_secret"

HEADER_NETWORK = "X-Cloudmgr-Metadata-Network"
HEADER_ADDRESS = "X-Cloudmgr-Metadata-Address"
HEADER_TIMESTAMP = "X-Cloudmgr-Metadata-Timestamp"
HEADER_SIGNATURE = "X-Cloudmgr-Metadata-Signature"
MAX_SKEW_SECONDS = 300


class MetadataError(NetworkError):
    """The metadata service cannot be set up; the message says what and why."""


# ------------------------------------------------------------------------------------- signatures


def _message(network_id: str, address: str, timestamp: str) -> bytes:
    return f"cloudmgr-metadata-v1\n{network_id}\n{address}\n{timestamp}".encode()


def sign(secret: bytes, network_id: str, address: str, timestamp: int | str) -> str:
    """The hex HMAC-SHA256 that vouches for (network, source address, time)."""
    return hmac.new(secret, _message(network_id, address, str(timestamp)), hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, network_id: str, address: str, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        HEADER_NETWORK: network_id,
        HEADER_ADDRESS: address,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(secret, network_id, address, timestamp),
    }


def verify(secret: bytes, headers: Mapping[str, str], now: float | None = None) -> tuple[str, str] | None:
    """(network id, source address) if ``headers`` carry a valid, fresh signature, else None."""
    network_id = headers.get(HEADER_NETWORK) or ""
    address = headers.get(HEADER_ADDRESS) or ""
    timestamp = headers.get(HEADER_TIMESTAMP) or ""
    signature = headers.get(HEADER_SIGNATURE) or ""
    if not (secret and network_id and address and timestamp.isdigit() and signature):
        return None
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_SECONDS:
        return None
    if not hmac.compare_digest(sign(secret, network_id, address, timestamp), signature.lower()):
        return None
    return network_id, address


# --------------------------------------------------------------------------------------- secret


def load_secret(data_dir: Path | str, environ: Mapping[str, str] | None = None) -> bytes:
    """The shared secret: ``CLOUDMGR_METADATA_SECRET``, or the data dir's secret file, made once."""
    env = os.environ if environ is None else environ
    if env.get("CLOUDMGR_METADATA_SECRET"):
        return env["CLOUDMGR_METADATA_SECRET"].encode()
    path = Path(data_dir) / SECRET_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting together, one writes and both read the same secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise MetadataError(f"cannot create the metadata secret {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    for _ in range(50):  # the writer may not have written yet
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise MetadataError(f"cannot read the metadata secret {path}: {exc.strerror}") from None
        if secret:
            return secret.encode()
        time.sleep(0.02)
    raise MetadataError(f"the metadata secret {path} is empty")
