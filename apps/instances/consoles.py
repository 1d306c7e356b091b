"""Remote consoles (noVNC through websockify): one-time, short-lived tokens.

`console_token_issue` asks the instance's host where its VNC server listens (localhost only: the
domain XML binds VNC to 127.0.0.1) and keeps ``token -> (host, port)`` in the shared cache for
`CLOUDMGR_CONSOLE_TOKEN_TTL` seconds. The proxy (`manage.py console_proxy`, websockify with
`ConsoleTokenPlugin`) consumes a token on its first use: a second connection with it is refused.
Only the token's hash is a cache key. The proxy must run on the compute host (one box today).
"""

import hashlib
import secrets

from django.conf import settings
from django.core.cache import cache

_PREFIX = "cloudmgr:console:"


def _key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def console_token_store(*, instance_id: str, host: str, port: int) -> str:
    token = secrets.token_urlsafe(32)
    cache.set(_key(token), {"instance_id": instance_id, "host": host, "port": int(port)},
              timeout=settings.CLOUDMGR_CONSOLE_TOKEN_TTL)
    return token


def console_token_consume(token: str) -> dict | None:
    """The target of a valid token, once; None if unknown, expired or used."""
    if not token:
        return None
    key = _key(token)
    target = cache.get(key)
    if target is None or not cache.delete(key):  # delete is the one-time claim
        return None
    return target


try:
    from websockify.token_plugins import BasePlugin
except ImportError:  # pragma: no cover - the proxy needs websockify; the web server does not
    BasePlugin = object


class ConsoleTokenPlugin(BasePlugin):
    """websockify token plugin: ``?token=`` -> the VNC server it was issued for, once."""

    def __init__(self, src=None):
        self.source = src
        import django

        django.setup()

    def lookup(self, token):
        target = console_token_consume(token)
        if target is None:
            return None
        return target["host"], str(target["port"])
