"""Keystone v3 request parsing and token bodies."""

from rest_framework import serializers

from apps.tenants.models import Project, Token
from apps.tenants.selectors import service_catalog

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}


def keystone_time(value) -> str:
    # Clients compare expires_at and issued_at as strings: one format for both.
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DomainRef(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)


class PasswordUser(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    domain = DomainRef(required=False)
    password = serializers.CharField(trim_whitespace=False)

    def validate(self, attrs):
        if not attrs.get("id") and not attrs.get("name"):
            raise serializers.ValidationError("user needs an id or a name")
        return attrs


class ProjectScope(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    domain = DomainRef(required=False)

    def validate(self, attrs):
        if not attrs.get("id") and not attrs.get("name"):
            raise serializers.ValidationError("project scope needs an id or a name")
        return attrs


def project_ref(project: Project) -> dict:
    return {"id": project.id.hex, "name": project.name, "domain": DEFAULT_DOMAIN}


def token_body(token: Token, *, role: str | None) -> dict:
    body = {
        "methods": ["password"],
        "user": {"id": token.user.pk.hex, "name": token.user.username, "domain": DEFAULT_DOMAIN, "password_expires_at": None},
        "audit_ids": [token.id.hex[:22]],
        "expires_at": keystone_time(token.expires_at),
        "issued_at": keystone_time(token.created_at),
    }
    if token.project is not None:
        roles = ["reader", "member", "admin"]
        granted = roles[: roles.index(role) + 1] if role in roles else []
        body["project"] = project_ref(token.project)
        body["roles"] = [{"id": name, "name": name} for name in granted]
        body["catalog"] = service_catalog(project=token.project)
        body["is_domain"] = False
    return body
