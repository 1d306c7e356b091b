"""The identity commands (thin doors over the services) and the service contract the portal and
the commands build on."""

import inspect
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.tenants import selectors, services
from apps.tenants.models import ApplicationCredential, Membership, Project, Quota, Role, Token, User
from cloudmgr.exceptions import Conflict, NotAuthenticated, NotFound, PermissionDenied, ValidationError

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- Commands ---------------------------------------------------------------------------------


def test_project_create_is_idempotent():
    out = run("project_create", "demo", "--description", "A demo")
    project = Project.objects.get(name="demo")
    assert project.id.hex in out and project.description == "A demo"
    assert Quota.objects.filter(project=project).count() == 11
    again = run("project_create", "demo")
    assert "exists already" in again and Project.objects.filter(name="demo").count() == 1
    with pytest.raises(CommandError, match="name"):
        run("project_create", " ")


def test_user_create_prints_a_generated_password_once():
    out = run("user_create", "carol", "--email", "carol@example.com")
    password = re.search(r"Password of carol: (\S+)", out).group(1)
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.com" and user.check_password(password)
    assert password not in user.password
    assert selectors.user_authenticate(name="carol", password=password) == user
    out = run("user_create", "dave", "--password", "Dave-pass-1234")
    assert "Password of" not in out and User.objects.get(username="dave").check_password("Dave-pass-1234")
    with pytest.raises(CommandError, match="Duplicate"):
        run("user_create", "carol")
    with pytest.raises(CommandError, match="password"):
        run("user_create", "erin", "--password", "short")
    with pytest.raises(CommandError, match="email"):
        run("user_create", "frank", "--email", "nope")


def test_role_grant_and_revoke(world):
    out = run("role_grant", "reader", "--user", "bob", "--project", "alpha")
    assert "bob has role reader on project alpha" in out
    run("role_grant", "reader", "--user", world.outsider.pk.hex, "--project", world.project.pk.hex)  # by ids, again
    assert Membership.objects.filter(user=world.outsider, project=world.project).count() == 1
    assert selectors.role_on_project(user=world.outsider, project=world.project) == Role.READER
    with pytest.raises(CommandError, match="Could not find role"):
        run("role_grant", "boss", "--user", "bob", "--project", "alpha")
    with pytest.raises(CommandError, match="User nobody"):
        run("role_grant", "member", "--user", "nobody", "--project", "alpha")
    with pytest.raises(CommandError, match="Project nowhere"):
        run("role_grant", "member", "--user", "bob", "--project", "nowhere")
    run("role_revoke", "reader", "--user", "bob", "--project", "alpha")
    assert selectors.role_on_project(user=world.outsider, project=world.project) is None
    with pytest.raises(CommandError, match="Could not find role assignment"):
        run("role_revoke", "reader", "--user", "bob", "--project", "alpha")


def test_user_set_password_prompts_twice(world, monkeypatch):
    token = world.token(world.member)
    answers = iter(["Alice-new-pass-1", "Alice-new-pass-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert "password of alice changed" in run("user_set_password", "alice")
    world.member.refresh_from_db()
    assert world.member.check_password("Alice-new-pass-1")
    assert Token.objects.get(key_hash=selectors.hash_token(token)).revoked_at is not None
    answers = iter(["One-pass-12345", "Other-pass-12345"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(CommandError, match="do not match"):
        run("user_set_password", "alice")
    run("user_set_password", "alice", "--password", "Alice-new-pass-2")
    world.member.refresh_from_db()
    assert world.member.check_password("Alice-new-pass-2")
    with pytest.raises(CommandError, match="too short"):
        run("user_set_password", "alice", "--password", "x")
    with pytest.raises(CommandError, match="nobody"):
        run("user_set_password", "nobody", "--password", "Whatever-pass-1")


def test_token_purge(world):
    world.token(world.member)
    assert "0 expired" in run("token_purge")


def test_cloud_bootstrap_still_makes_the_admin(tmp_path):
    password_file = tmp_path / "pw"
    run("cloud_bootstrap", "--password-file", str(password_file))
    admin = User.objects.get(username="admin")
    assert admin.check_password(password_file.read_text().strip())
    assert selectors.is_cloud_admin(user=admin)
    assert selectors.user_project_roles(user=admin, project=Project.objects.get(name="admin")) == ["admin"]
    run("cloud_bootstrap")  # idempotent
    assert Membership.objects.filter(user=admin).count() == 1


# --- The service contract (the portal calls these) --------------------------------------------


def test_services_are_keyword_only():
    for name in (
        "application_credential_create",
        "application_credential_delete",
        "project_create",
        "user_create",
        "user_set_password",
        "user_update",
        "role_grant",
        "role_revoke",
        "quota_set",
        "role_set",
    ):
        params = inspect.signature(getattr(services, name)).parameters.values()
        assert all(p.kind == p.KEYWORD_ONLY for p in params), name
    params = inspect.signature(selectors.application_credential_list).parameters
    assert next(iter(params)) == "user" and params["user"].kind == inspect.Parameter.KEYWORD_ONLY


def test_application_credential_services(world):
    secret, cred = services.application_credential_create(
        user=world.member, project=world.project, name="ci", description="CI"
    )
    assert isinstance(secret, str) and len(secret) >= 80 and cred.roles == ["reader", "member"]
    assert list(selectors.application_credential_list(user=world.member)) == [cred]
    assert list(selectors.application_credential_list(user=world.outsider)) == []
    with pytest.raises(Conflict):
        services.application_credential_create(user=world.member, project=world.project, name="ci")
    with pytest.raises(ValidationError):
        services.application_credential_create(user=world.member, project=world.project, name="x", roles=["admin"])
    with pytest.raises(PermissionDenied):  # no role on beta
        services.application_credential_create(user=world.member, project=world.other_project, name="x")
    with pytest.raises(NotFound):  # somebody else's
        services.application_credential_delete(user=world.outsider, credential=cred)
    services.application_credential_delete(user=world.member, credential=cred)
    assert not ApplicationCredential.objects.exists()


def test_user_and_role_services(world):
    user = services.user_create(username="carol", password="Carol-pass-123", email="c@example.com")
    services.user_update(user=user, enabled=False, email="d@example.com")
    user.refresh_from_db()
    assert (user.is_active, user.email) == (False, "d@example.com")
    with pytest.raises(NotAuthenticated):
        selectors.user_authenticate(name="carol", password="Carol-pass-123")
    services.user_update(user=user, enabled=True)
    services.user_set_password(user=user, password="Carol-pass-456")
    assert selectors.user_authenticate(name="carol", password="Carol-pass-456") == user

    services.role_grant(user=user, project=world.project, role=Role.READER)
    services.role_grant(user=user, project=world.project, role=Role.MEMBER)
    assert selectors.user_project_roles(user=user, project=world.project) == ["member", "reader"]
    assert selectors.role_on_project(user=user, project=world.project) == Role.MEMBER
    services.role_set(user=user, project=world.project, role=Role.READER)
    assert selectors.user_project_roles(user=user, project=world.project) == ["reader"]
    services.role_revoke(user=user, project=world.project, role=Role.READER)
    with pytest.raises(NotFound):
        services.role_revoke(user=user, project=world.project, role=Role.READER)
    with pytest.raises(NotFound):
        services.role_grant(user=user, project=world.project, role="boss")

    quota = services.quota_set(project=world.project, resource="instances", limit=3)
    assert quota.limit == 3
    with pytest.raises(ValidationError):
        services.quota_set(project=world.project, resource="instances", limit=-2)
