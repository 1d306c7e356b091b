"""Failed logins on the Keystone API are rate limited with the portal's limits, so that guessing
passwords (or application credential secrets) is as slow through the API as through the login
page: ACCOUNT_RATE_LIMITS["login_failed"], e.g. "10/m/ip,5/5m/key" (10 failures a minute from one
address, 5 in 5 minutes for one account name). Only failures count; a request over a limit is
answered 429 before any password is checked. Counters live in Django's cache (the shared Redis
cache of cloudmgr's settings, so they hold across web workers)."""

import hashlib
import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from rest_framework.exceptions import Throttled

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    amount: int
    seconds: int
    per: str  # "ip" or "key"


def _rates() -> list[Rate]:
    spec = getattr(settings, "ACCOUNT_RATE_LIMITS", {}).get("login_failed") or ""
    rates = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        amount, duration, per = part.split("/")
        match = re.fullmatch(r"(\d*)([smhd])", duration)
        if not match:
            continue
        rates.append(Rate(int(amount), int(match.group(1) or 1) * _UNITS[match.group(2)], per))
    return rates


class LoginFailures:
    def __init__(self, request, account: str | None):
        self.client = request.META.get("REMOTE_ADDR", "")
        self.account = (account or "").lower()

    def _keys(self):
        for rate in _rates():
            subject = self.client if rate.per == "ip" else self.account
            if not subject:
                continue
            digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
            yield rate, f"cloudmgr:login_failed:{rate.per}:{rate.seconds}:{digest}"

    def check(self) -> None:
        """429 if a limit is reached already. If the cache is down, logins go on (logged): the
        limit is a brake on guessing, not a reason to lock every client out."""
        try:
            over = [rate for rate, key in self._keys() if (cache.get(key) or 0) >= rate.amount]
        except Exception:
            logger.exception("login rate limit unavailable (cache error); not limiting")
            return
        if over:
            raise Throttled(wait=max(rate.seconds for rate in over), detail="Too many failed logins; try again later.")

    def record(self) -> None:
        try:
            for rate, key in self._keys():
                cache.add(key, 0, timeout=rate.seconds)
                try:
                    cache.incr(key)
                except ValueError:  # expired in between
                    cache.set(key, 1, timeout=rate.seconds)
        except Exception:
            logger.exception("login rate limit unavailable (cache error); failure not counted")
