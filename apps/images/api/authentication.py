"""The image file endpoints also take an image ticket (apps/images/tickets.py) in `X-Auth-Token`:
how a compute host's agent fetches an image it must boot, or uploads an instance snapshot. A
ticket authenticates no user; it lets only `GET` (download ticket) or `PUT` (upload ticket) of
`/v2/images/<its image>/file` through; which image and which action are checked by the
selector and the service."""

from dataclasses import dataclass

from rest_framework import authentication

from apps.images import tickets
from cloudmgr.api.authentication import HEADER
from cloudmgr.api.permissions import ProjectRolePermission


@dataclass(frozen=True)
class ImageTicket:
    key: str


class ImageTicketAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.META.get(HEADER)
        if not tickets.is_ticket(key):
            return None  # a user's token: the next authentication class decides
        return None, ImageTicket(key)

    def authenticate_header(self, request):
        return 'Keystone uri="/identity/v3"'


class TicketOrProjectRole(ProjectRolePermission):
    """A ticket may download (GET) or upload (PUT) an image's file and nothing else; anything
    else is the usual policy."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ImageTicket):
            action = getattr(view, "action", None)
            return (request.method in ("GET", "HEAD") and action == "download") or (
                request.method == "PUT" and action == "upload"
            )
        return super().has_permission(request, view)
