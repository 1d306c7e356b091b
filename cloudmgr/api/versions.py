"""Version discovery documents, built from the public base URL."""

from django.conf import settings

UPDATED = "2026-11-01T00:00:00Z"


def public_url(path: str) -> str:
    return f"{settings.CLOUDMGR_PUBLIC_URL}/{path.lstrip('/')}"


def link(rel: str, href: str) -> dict:
    return {"rel": rel, "href": href}
