"""Image tickets: how a compute host reads or writes one image without a user's token.

A ticket is `<action>:<image id>` signed with the secret key and a timestamp (django.core.signing).
A `download` ticket allows `GET /image/v2/images/<that id>/file`; an `upload` ticket allows
`PUT` of the same path while the image is queued (an instance snapshot), acting as the image's
owner. Either is valid for `CLOUDMGR_IMAGE_TICKET_TTL` seconds after it was issued. Nothing is
stored; the control plane puts one in the agent's spec (ImageRef.auth_token for a download) and
the agent sends it as `X-Auth-Token`. A user's token in a message would let anyone who reads the
broker act as that user everywhere; a ticket does one thing to one image for a short while.
"""

from django.conf import settings
from django.core import signing

from cloudmgr.exceptions import NotAuthenticated, PermissionDenied

PREFIX = "cmimg1."
DOWNLOAD = "download"
UPLOAD = "upload"
_SALT = "cloudmgr.images.ticket"


def is_ticket(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)


def ticket_issue(*, image_id: str, action: str = DOWNLOAD) -> str:
    return PREFIX + signing.TimestampSigner(salt=_SALT).sign(f"{action}:{image_id}")


def ticket_image_id(*, ticket: str, action: str = DOWNLOAD) -> str:
    """The image id a valid ticket for this action names; NotAuthenticated (401) for a forged or
    expired ticket, PermissionDenied (403) for a ticket of another action."""
    if not is_ticket(ticket):
        raise NotAuthenticated("The request you have made requires authentication.")
    try:
        value = signing.TimestampSigner(salt=_SALT).unsign(
            ticket[len(PREFIX):], max_age=settings.CLOUDMGR_IMAGE_TICKET_TTL
        )
    except signing.SignatureExpired:
        raise NotAuthenticated("The image ticket has expired.") from None
    except signing.BadSignature:
        raise NotAuthenticated("The image ticket is not valid.") from None
    granted, _, image_id = value.partition(":")
    if granted != action:
        raise PermissionDenied(f"This image ticket allows {granted}, not {action}.")
    return image_id
