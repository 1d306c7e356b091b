from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.tenants import services
from apps.tenants.api import serializers as s
from apps.tenants.selectors import project_get, role_on_project, user_authenticate
from cloudmgr.api.versions import link, public_url
from cloudmgr.exceptions import NotAuthenticated, NotFound, ValidationError

UPDATED = "2024-04-01T00:00:00Z"


def _version_v3() -> dict:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": UPDATED,
        "links": [link("self", public_url("identity/v3/"))],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


class IdentityView(APIView):
    error_style = "keystone"
    authentication_classes: list = []
    permission_classes: list = []


class IdentityVersionsView(IdentityView):
    def get(self, request):
        return Response({"versions": {"values": [_version_v3()]}}, status=status.HTTP_300_MULTIPLE_CHOICES)


class IdentityVersionView(IdentityView):
    def get(self, request):
        return Response({"version": _version_v3()})


class AuthTokensView(IdentityView):
    """POST /v3/auth/tokens with the password method, scoped to a project or unscoped."""

    def post(self, request):
        auth = request.data.get("auth") if isinstance(request.data, dict) else None
        if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
            raise ValidationError("Expecting to find identity in auth.")
        identity = auth["identity"]
        if "password" not in identity.get("methods", []):
            raise ValidationError("Only the password method is supported.")
        parsed = s.PasswordUser(data=(identity.get("password") or {}).get("user") or {})
        parsed.is_valid(raise_exception=True)
        user = self._authenticate(parsed.validated_data)
        project = self._scope(user, auth.get("scope"))
        key, token = services.token_issue(user=user, project=project)
        role = role_on_project(user=user, project=project) if project else None
        response = Response({"token": s.token_body(token, role=role)}, status=status.HTTP_201_CREATED)
        response["X-Subject-Token"] = key
        return response

    def _authenticate(self, data):
        return user_authenticate(
            request=self.request._request, username=data.get("name"), user_id=data.get("id"), password=data["password"]
        )

    def _scope(self, user, scope):
        if not scope:
            return None
        if not isinstance(scope, dict) or not isinstance(scope.get("project"), dict):
            raise ValidationError("Only project scope is supported.")
        parsed = s.ProjectScope(data=scope["project"])
        parsed.is_valid(raise_exception=True)
        ref = parsed.validated_data
        try:
            return project_get(user=user, name_or_id=ref.get("name") or ref["id"])
        except NotFound as exc:
            raise NotAuthenticated(f"User has no access to project {ref.get('name') or ref.get('id')}.") from exc
