"""Keystone v3 request parsing and response bodies (the API reference's fields, no others)."""

from urllib.parse import urlencode

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from apps.tenants.models import (
    ADMIN_PROJECT_NAME,
    DEFAULT_DOMAIN_ID,
    DEFAULT_DOMAIN_NAME,
    ApplicationCredential,
    Group,
    Project,
    Token,
    User,
)
from apps.tenants.selectors import Assignment, RoleInfo, service_catalog
from cloudmgr.api.versions import public_url

DEFAULT_DOMAIN = {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME}


def keystone_time(value) -> str | None:
    # Clients compare expires_at and issued_at as strings: one format for both.
    return value.astimezone(timezone.get_fixed_timezone(0)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def identity_url(path: str) -> str:
    return public_url(f"identity/v3/{path}")


def collection(request, key: str, items: list, path: str) -> dict:
    """Keystone's list body: the items and `links` (self, previous, next; no paging)."""
    query = urlencode(list(request.query_params.lists()), doseq=True)
    self_url = identity_url(path) + (f"?{query}" if query else "")
    return {key: items, "links": {"self": self_url, "previous": None, "next": None}}


# --- Request bodies ---------------------------------------------------------------------------


class DomainRef(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)


class AuthUser(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    domain = DomainRef(required=False)


class PasswordUser(AuthUser):
    password = serializers.CharField(trim_whitespace=False)

    def validate(self, attrs):
        if not attrs.get("id") and not attrs.get("name"):
            raise serializers.ValidationError("Expecting to find id or name in user.")
        return attrs


class TokenMethod(serializers.Serializer):
    id = serializers.CharField()


class ApplicationCredentialMethod(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    user = AuthUser(required=False)
    secret = serializers.CharField(trim_whitespace=False)

    def validate(self, attrs):
        if not attrs.get("id") and not (attrs.get("name") and attrs.get("user")):
            raise serializers.ValidationError("Expecting to find id, or name and user, in application_credential.")
        return attrs


class ProjectScope(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    domain = DomainRef(required=False)

    def validate(self, attrs):
        if not attrs.get("id") and not attrs.get("name"):
            raise serializers.ValidationError("Expecting to find id or name in project.")
        return attrs


def _domain_id_field():
    return serializers.CharField(required=False, allow_null=True)


class _DomainChecked(serializers.Serializer):
    def validate_domain_id(self, value):
        if value not in (None, DEFAULT_DOMAIN_ID):
            raise serializers.ValidationError(f"Could not find domain: {value}. cloudmgr has one domain, 'default'.")
        return value


class ProjectCreate(_DomainChecked):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    enabled = serializers.BooleanField(required=False, default=True)
    domain_id = _domain_id_field()
    parent_id = serializers.CharField(required=False, allow_null=True)
    is_domain = serializers.BooleanField(required=False, default=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    options = serializers.DictField(required=False)

    def validate_is_domain(self, value):
        if value:
            raise serializers.ValidationError("Projects acting as domains are not supported.")
        return value

    def validate_tags(self, value):
        if value:
            raise serializers.ValidationError("Project tags are not supported.")
        return value


class ProjectUpdate(ProjectCreate):
    name = serializers.CharField(max_length=64, required=False)
    enabled = serializers.BooleanField(required=False)
    is_domain = serializers.BooleanField(required=False)

    def validate(self, attrs):
        if "parent_id" in attrs:
            raise serializers.ValidationError("parent_id cannot be changed.")
        return attrs


class UserCreate(_DomainChecked):
    name = serializers.CharField(max_length=150)
    password = serializers.CharField(required=False, allow_null=True, trim_whitespace=False)
    email = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    enabled = serializers.BooleanField(required=False, default=True)
    default_project_id = serializers.CharField(required=False, allow_null=True)
    domain_id = _domain_id_field()
    options = serializers.DictField(required=False)


class UserUpdate(UserCreate):
    name = serializers.CharField(max_length=150, required=False)
    enabled = serializers.BooleanField(required=False)


class PasswordChange(serializers.Serializer):
    original_password = serializers.CharField(trim_whitespace=False)
    password = serializers.CharField(trim_whitespace=False)


class GroupCreate(_DomainChecked):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    domain_id = _domain_id_field()


class GroupUpdate(GroupCreate):
    name = serializers.CharField(max_length=64, required=False)


class RoleCreate(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    domain_id = serializers.CharField(required=False, allow_null=True)
    options = serializers.DictField(required=False)

    def validate_domain_id(self, value):
        if value:
            raise serializers.ValidationError("Domain-specific roles are not supported.")
        return value


class RoleUpdate(RoleCreate):
    name = serializers.CharField(max_length=64, required=False)


class RoleRef(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)

    def validate(self, attrs):
        if not attrs.get("id") and not attrs.get("name"):
            raise serializers.ValidationError("A role needs an id or a name.")
        return attrs


class ExpiryField(serializers.Field):
    """An ISO 8601 time; without a zone it is UTC (as Keystone reads it)."""

    def to_internal_value(self, data):
        parsed = parse_datetime(data) if isinstance(data, str) else None
        if parsed is None:
            raise serializers.ValidationError("Expecting an ISO 8601 date and time.")
        return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=timezone.get_fixed_timezone(0))

    def to_representation(self, value):
        return keystone_time(value)


class ApplicationCredentialCreate(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    secret = serializers.CharField(required=False, allow_null=True, trim_whitespace=False)
    expires_at = ExpiryField(required=False, allow_null=True)
    roles = RoleRef(many=True, required=False)
    unrestricted = serializers.BooleanField(required=False, allow_null=True)
    access_rules = serializers.ListField(required=False)

    def validate_access_rules(self, value):
        if value:
            raise serializers.ValidationError("Access rules are not supported.")
        return value


# --- Response bodies --------------------------------------------------------------------------


def domain_body(domain: dict) -> dict:
    return {
        "id": domain["id"],
        "name": domain["name"],
        "description": "The default domain",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": {"self": identity_url(f"domains/{domain['id']}")},
    }


def project_ref(project: Project) -> dict:
    return {"id": project.id.hex, "name": project.name, "domain": DEFAULT_DOMAIN}


def project_body(project: Project) -> dict:
    return {
        "id": project.id.hex,
        "name": project.name,
        "description": project.description,
        "enabled": project.enabled,
        "domain_id": DEFAULT_DOMAIN_ID,
        "parent_id": project.parent_id.hex if project.parent_id else DEFAULT_DOMAIN_ID,
        "is_domain": False,
        "tags": [],
        "options": {},
        "links": {"self": identity_url(f"projects/{project.id.hex}")},
    }


def user_body(user: User) -> dict:
    body = {
        "id": user.pk.hex,
        "name": user.username,
        "domain_id": DEFAULT_DOMAIN_ID,
        "enabled": user.is_active,
        "password_expires_at": None,
        "options": {},
        "links": {"self": identity_url(f"users/{user.pk.hex}")},
    }
    # Keystone shows these only when they are set.
    if user.email:
        body["email"] = user.email
    if user.description:
        body["description"] = user.description
    if user.default_project_id:
        body["default_project_id"] = user.default_project_id.hex
    return body


def group_body(group: Group) -> dict:
    return {
        "id": group.pk.hex,
        "name": group.name,
        "description": group.description,
        "domain_id": DEFAULT_DOMAIN_ID,
        "links": {"self": identity_url(f"groups/{group.pk.hex}")},
    }


def role_body(role: RoleInfo) -> dict:
    return {
        "id": role.id,
        "name": role.name,
        "domain_id": None,
        "description": role.description or None,
        "options": {},
        "links": {"self": identity_url(f"roles/{role.id}")},
    }


def role_ref(name: str) -> dict:
    return {"id": name, "name": name}


def assignment_body(item: Assignment, *, include_names: bool) -> dict:
    project = item.project
    scope = {"project": project_ref(project) if include_names else {"id": project.id.hex}}
    body: dict = {"scope": scope, "role": role_ref(item.role) if include_names else {"id": item.role}, "links": {}}
    link = f"projects/{project.id.hex}"
    if item.user is not None:
        body["user"] = (
            {"id": item.user.pk.hex, "name": item.user.username, "domain": DEFAULT_DOMAIN}
            if include_names
            else {"id": item.user.pk.hex}
        )
        if item.via_group is not None:
            body["links"]["membership"] = identity_url(f"groups/{item.via_group.pk.hex}/users/{item.user.pk.hex}")
            link += f"/groups/{item.via_group.pk.hex}"
        else:
            link += f"/users/{item.user.pk.hex}"
    else:
        body["group"] = (
            {"id": item.group.pk.hex, "name": item.group.name, "domain": DEFAULT_DOMAIN}
            if include_names
            else {"id": item.group.pk.hex}
        )
        link += f"/groups/{item.group.pk.hex}"
    if item.prior_role:
        link += f"/roles/{item.prior_role}"
        body["links"]["prior_role"] = identity_url(f"roles/{item.prior_role}/implies/{item.role}")
    else:
        link += f"/roles/{item.role}"
    body["links"]["assignment"] = identity_url(link)
    return body


def application_credential_body(credential: ApplicationCredential, *, secret: str | None = None) -> dict:
    body = {
        "id": credential.pk.hex,
        "name": credential.name,
        "description": credential.description or None,
        "project_id": credential.project_id.hex,
        "roles": [{"id": name, "name": name, "domain_id": None} for name in credential.roles],
        "expires_at": keystone_time(credential.expires_at),
        "unrestricted": credential.unrestricted,
        "access_rules": [],
        "links": {"self": identity_url(f"users/{credential.user_id.hex}/application_credentials/{credential.pk.hex}")},
    }
    if secret is not None:
        body["secret"] = secret
    return body


def token_body(token: Token, *, roles: list[str], include_catalog: bool = True) -> dict:
    body = {
        "methods": token.method_list,
        "user": {
            "id": token.user.pk.hex,
            "name": token.user.username,
            "domain": DEFAULT_DOMAIN,
            "password_expires_at": None,
        },
        "audit_ids": [token.audit_id, *([token.audit_chain_id] if token.audit_chain_id else [])],
        "expires_at": keystone_time(token.expires_at),
        "issued_at": keystone_time(token.issued_at),
    }
    if token.project is not None:
        body["project"] = project_ref(token.project)
        body["is_domain"] = False
        body["is_admin_project"] = token.project.name == ADMIN_PROJECT_NAME
    elif token.domain_scoped:
        body["domain"] = DEFAULT_DOMAIN
    if token.project is not None or token.domain_scoped:
        body["roles"] = [role_ref(name) for name in roles]
        if include_catalog:
            body["catalog"] = service_catalog(project=token.project)
    credential = token.application_credential
    if credential is not None:
        body["application_credential"] = {
            "id": credential.pk.hex,
            "name": credential.name,
            "restricted": not credential.unrestricted,
        }
    return body
