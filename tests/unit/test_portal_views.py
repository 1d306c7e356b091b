"""Portal views with Django's test client. Proposed as tests/unit/test_portal_views.py."""
import pytest

from apps.instances import services
from apps.instances.models import Instance
from apps.instances.states import VmState
from cloudmgr.exceptions import ServiceUnavailable
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def login(client, user):
    client.force_login(user)
    return client


def launch(world, name="vm1", user=None):
    return services.instance_create(user=user or world.member, project=world.project, name=name,
                                    flavor=world.flavor, image=world.image)


def test_anonymous_goes_to_login_and_htmx_gets_hx_redirect(client):
    r = client.get("/instances/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/?next=/instances/")
    r = client.get("/instances/rows/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/instances/")
    assert r.status_code == 200 and r["HX-Redirect"] == "/accounts/login/?next=/instances/"


def test_login_page_and_wrong_password(client, world):
    r = client.post("/accounts/login/", {"login": "alice", "password": "nope"})
    assert r.status_code == 200 and b"not correct" in r.content
    r = client.post("/accounts/login/", {"login": "alice", "password": "pw-alice-123"})
    assert r.status_code == 302 and r["Location"] == "/"


def test_user_without_project_sees_a_page_that_says_so(client, db):
    from apps.tenants.models import User
    login(client, User.objects.create_user("nobody", password="x-12345678"))
    r = client.get("/instances/")
    assert r.status_code == 403 and b"not a member of any project" in r.content


def test_list_rows_detail_overview_console(client, world):
    make_host()
    vm = launch(world)
    login(client, world.member)
    r = client.get("/instances/")
    assert r.status_code == 200 and b"vm1" in r.content and b"Launch instance" in r.content and b'hx-trigger="every 2s"' in r.content
    r = client.get("/instances/rows/", HTTP_HX_REQUEST="true")
    assert b"<html" not in r.content and b"ACTIVE" in r.content
    r = client.get(f"/instances/{vm.pk}/")
    assert r.status_code == 200 and b"ACTIVE" in r.content
    r = client.get(f"/instances/{vm.pk}/overview/", HTTP_HX_REQUEST="true")
    assert b"Running" in r.content
    r = client.get(f"/instances/{vm.pk}/console/", HTTP_HX_REQUEST="true")
    assert b"CLOUDMGR_TESTVM_BOOTED" in r.content


def test_console_host_not_answering_is_friendly(client, world, monkeypatch):
    make_host()
    vm = launch(world)
    def boom(**kw):
        raise ServiceUnavailable("The host did not answer within 15 s.")
    monkeypatch.setattr("apps.instances.selectors.instance_console_log", boom)
    login(client, world.member)
    r = client.get(f"/instances/{vm.pk}/console/", HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and b"did not answer" in r.content


def test_launch_form(client, world):
    make_host()
    login(client, world.member)
    r = client.get("/instances/launch/")
    assert r.status_code == 200 and b"m1.nano" in r.content and b"testvm" in r.content
    r = client.post("/instances/launch/", {"name": "web", "image": str(world.image.pk), "flavor": world.flavor.pk})
    vm = Instance.objects.get(name="web")
    assert r.status_code == 302 and r["Location"] == f"/instances/{vm.pk}/"
    assert vm.vm_state == VmState.ACTIVE


def test_launch_service_error_rerenders_form(client, world):
    from apps.tenants.services import quota_set
    make_host()
    quota_set(project=world.project, resource="instances", limit=0)
    login(client, world.member)
    r = client.post("/instances/launch/", {"name": "web", "image": str(world.image.pk), "flavor": world.flavor.pk})
    assert r.status_code == 200 and b"form-error" in r.content, r.content.decode()[:3000]
    assert not Instance.objects.filter(name="web").exists()


def test_reader_sees_no_buttons_and_is_refused(client, world):
    make_host()
    vm = launch(world)
    login(client, world.reader)
    r = client.get("/instances/")
    assert r.status_code == 200 and b"Launch instance" not in r.content and b"Delete" not in r.content
    r = client.get(f"/instances/{vm.pk}/")
    assert b"Delete" not in r.content
    r = client.post("/instances/launch/", {"name": "x", "image": str(world.image.pk), "flavor": world.flavor.pk}, follow=True)
    assert b"allows viewing only" in r.content and not Instance.objects.filter(name="x").exists()
    r = client.post(f"/instances/{vm.pk}/delete/", follow=True)
    assert b"allows viewing only" in r.content
    vm.refresh_from_db(); assert vm.deleted_at is None


def test_delete_plain_and_htmx(client, world):
    make_host()
    a, b = launch(world, "a"), launch(world, "b")
    login(client, world.member)
    r = client.get(f"/instances/{a.pk}/delete/")
    assert r.status_code == 200 and b"Delete instance a?" in r.content
    r = client.post(f"/instances/{a.pk}/delete/")
    assert r.status_code == 302 and r["Location"] == "/instances/"
    a.refresh_from_db(); assert a.deleted_at is not None
    r = client.post(f"/instances/{b.pk}/delete/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="instance-rows")
    assert r.status_code == 200 and b'hx-swap-oob="true"' in r.content and b"is being deleted" in r.content
    assert b'id="instance-' not in r.content
    r = client.post(f"/instances/{b.pk}/delete/", HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == "/instances/"


def test_other_projects_instance_is_not_found(client, world):
    make_host()
    vm = launch(world)
    login(client, world.outsider)
    r = client.get(f"/instances/{vm.pk}/", follow=True)
    assert b"could not be found" in r.content
    r = client.get(f"/instances/{vm.pk}/overview/", HTTP_HX_REQUEST="true")
    assert r.status_code == 286
    r = client.post(f"/instances/{vm.pk}/delete/", follow=True)
    assert b"could not be found" in r.content
    vm.refresh_from_db(); assert vm.deleted_at is None


def test_project_switch(client, world):
    from apps.tenants.models import Role
    from apps.tenants.services import role_grant
    role_grant(user=world.member, project=world.other_project, role=Role.READER)
    login(client, world.member)
    r = client.post("/project/", {"project": str(world.other_project.pk), "next": "/instances/"})
    assert r.status_code == 302 and r["Location"] == "/instances/"
    r = client.get("/instances/")
    assert b"Launch instance" not in r.content  # reader in beta
    r = client.post("/project/", {"project": "no-such", "next": "http://evil.example/"}, follow=True)
    assert b"could not be found" in r.content


def test_404_page(client, world):
    login(client, world.member)
    r = client.get("/no/such/page/")
    assert r.status_code == 404 and b"Page not found" in r.content and b"alpha" in r.content
    r = client.get("/instances/00000000-0000-0000-0000-000000000000/", follow=True)
    assert b"could not be found" in r.content
