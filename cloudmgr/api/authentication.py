"""The one seam where API requests are authenticated: an `X-Auth-Token` header, as OpenStack.

On success `request.user` is the user and `request.auth` the Token (with its project, its
application credential, and what its holder may do: `token.role`, `token.cloud_admin`), all
loaded in one indexed query (apps.tenants.selectors.token_authenticate). No password hashing here.
"""

from rest_framework import authentication, exceptions

from apps.tenants.selectors import token_authenticate
from cloudmgr.exceptions import NotAuthenticated

HEADER = "HTTP_X_AUTH_TOKEN"


class TokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.META.get(HEADER)
        if not key:
            return None
        try:
            token = token_authenticate(key=key)
        except NotAuthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from exc
        return token.user, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when the token is missing, as keystonemiddleware does.
        return 'Keystone uri="/identity/v3"'
