"""Keystone v3 over the identity services. Each view parses the request, calls one selector or
service, and renders Keystone's body; policy is declared (`admin_only`) and enforced by
cloudmgr/api/permissions.py, or decided by the selectors and services."""

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.tenants import selectors, services
from apps.tenants.api import serializers as s
from apps.tenants.api.throttling import LoginFailures
from apps.tenants.models import DEFAULT_DOMAIN_ID
from cloudmgr.api.pagination import query_flag
from cloudmgr.api.versions import link, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet
from cloudmgr.exceptions import NotAuthenticated, NotFound, PermissionDenied, ValidationError

UPDATED = "2024-04-01T00:00:00Z"
METHODS = ("password", "token", "application_credential")
SCOPES = ("project", "domain", "system", "OS-TRUST:trust", "unscoped")


def _version_v3() -> dict:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": UPDATED,
        "links": [link("self", public_url("identity/v3/"))],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


class NotImplementedHere(APIException):
    status_code = 501
    default_detail = "The action you have requested has not been implemented."


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


class IdentityNotFoundView(IdentityView):
    """Any other path under /identity/v3/: Keystone's JSON 404, never an HTML page."""

    def dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.request = self.initialize_request(request, *args, **kwargs)
        self.headers = self.default_response_headers
        response = self.handle_exception(NotFound("The resource could not be found."))
        self.response = self.finalize_response(self.request, response, *args, **kwargs)
        return self.response


class IdentityViewSet(ProjectScopedViewSet):
    """Identity resources: any valid token may call them (project-scoped or not); what each
    action needs is declared in `admin_only` or decided by the selectors and services."""

    project_scoped = False

    def param(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def flag(self, name: str) -> bool | None:
        return query_flag(self.request.query_params, name)

    def parse(self, serializer_class, key: str) -> dict:
        parsed = serializer_class(data=self.body(key))
        parsed.is_valid(raise_exception=True)
        return parsed.validated_data

    @property
    def acting_credential(self):
        return self.request.auth.application_credential

    def no_content(self) -> Response:
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Tokens -----------------------------------------------------------------------------------


class AuthTokenViewSet(IdentityViewSet):
    """POST (issue, no token needed), GET (validate), HEAD (check), DELETE (revoke)
    /v3/auth/tokens; the token asked about is in X-Subject-Token."""

    def get_authenticators(self):
        # The schema generator builds views without a request.
        if self.request is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    def get_permissions(self):
        if self.request.method == "POST":
            return []
        return super().get_permissions()

    # POST

    def issue(self, request):
        auth = request.data.get("auth") if isinstance(request.data, dict) else None
        if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
            raise ValidationError("Expecting to find identity in auth.")
        identity = auth["identity"]
        methods = identity.get("methods")
        if not isinstance(methods, list) or not methods:
            raise ValidationError("Expecting to find methods in identity.")
        methods = list(dict.fromkeys(methods))
        if len(methods) != 1 or methods[0] not in METHODS:
            raise NotAuthenticated("Attempted to authenticate with an unsupported method.")
        method = methods[0]
        payload = identity.get(method)
        if not isinstance(payload, dict):
            raise ValidationError(f"Expecting to find {method} in identity.")
        scope = auth.get("scope")
        if method == "password":
            key, token = self._by_password(payload, scope)
        elif method == "token":
            key, token = self._by_token(payload, scope)
        else:
            key, token = self._by_application_credential(payload, scope)
        body = s.token_body(
            token,
            roles=selectors.token_role_names(token=token),
            include_catalog="nocatalog" not in request.query_params,
        )
        response = Response({"token": body}, status=status.HTTP_201_CREATED)
        response["X-Subject-Token"] = key
        return response

    def _by_password(self, payload, scope):
        parsed = s.PasswordUser(data=payload.get("user") or {})
        parsed.is_valid(raise_exception=True)
        ref = parsed.validated_data
        failures = LoginFailures(self.request._request, ref.get("name") or ref.get("id"))
        failures.check()
        try:
            user = selectors.user_authenticate(
                password=ref["password"], user_id=ref.get("id"), name=ref.get("name"), domain=ref.get("domain")
            )
        except NotAuthenticated:
            failures.record()
            raise
        project, domain_scoped = self._scope(user, scope)
        return services.token_issue(user=user, project=project, domain_scoped=domain_scoped, methods=["password"])

    def _by_token(self, payload, scope):
        parsed = s.TokenMethod(data=payload)
        parsed.is_valid(raise_exception=True)
        try:
            token = selectors.token_authenticate(key=parsed.validated_data["id"])
        except NotAuthenticated as exc:
            raise NotFound("Could not find token.") from exc
        if token.application_credential is not None:
            return services.token_rescope(token=token, scope_requested=scope is not None)
        project, domain_scoped = self._scope(token.user, scope)
        return services.token_rescope(token=token, project=project, domain_scoped=domain_scoped)

    def _by_application_credential(self, payload, scope):
        if scope is not None:
            raise NotAuthenticated(
                "Error authenticating with application credential: Application credentials cannot request a scope."
            )
        parsed = s.ApplicationCredentialMethod(data=payload)
        parsed.is_valid(raise_exception=True)
        ref = parsed.validated_data
        failures = LoginFailures(self.request._request, ref.get("id") or ref.get("name"))
        failures.check()
        try:
            credential = selectors.application_credential_authenticate(
                secret=ref["secret"],
                credential_id=ref.get("id"),
                name=ref.get("name"),
                user=ref.get("user"),
            )
        except NotAuthenticated:
            failures.record()
            raise
        return services.token_issue_for_credential(credential=credential)

    def _scope(self, user, scope):
        """(project, domain_scoped) from the request's scope; with none, the user's default
        project if they may use it, else unscoped (as Keystone)."""
        if scope is None:
            if user.default_project_id is None:
                return None, False
            return selectors.project_list(user=user).filter(pk=user.default_project_id).first(), False
        if scope == "unscoped":
            return None, False
        if not isinstance(scope, dict) or sum(key in scope for key in SCOPES) != 1:
            raise ValidationError(
                "Expecting to find exactly one of project, domain, system, OS-TRUST:trust or unscoped in scope."
            )
        if "unscoped" in scope:
            return None, False
        if "project" in scope:
            parsed = s.ProjectScope(data=scope["project"] if isinstance(scope["project"], dict) else {})
            parsed.is_valid(raise_exception=True)
            ref = parsed.validated_data
            project = selectors.project_for_scope(
                user=user, project_id=ref.get("id"), name=ref.get("name"), domain=ref.get("domain")
            )
            return project, False
        if "domain" in scope:
            parsed = s.DomainRef(data=scope["domain"] if isinstance(scope["domain"], dict) else {})
            parsed.is_valid(raise_exception=True)
            ref = parsed.validated_data
            if (
                not ref
                or ref.get("id", DEFAULT_DOMAIN_ID) != DEFAULT_DOMAIN_ID
                or ref.get("name", "Default") != "Default"
            ):
                raise NotAuthenticated(f"Could not find domain: {ref.get('id') or ref.get('name')}.")
            return None, True
        raise NotAuthenticated(
            "cloudmgr issues project-scoped, domain-scoped and unscoped tokens only (no system scope, no trusts)."
        )

    # GET, HEAD, DELETE

    def _subject(self):
        key = self.request.META.get("HTTP_X_SUBJECT_TOKEN")
        if not key:
            raise ValidationError("Expecting to find X-Subject-Token in the request headers.")
        return key, selectors.token_validate(viewer=self.user, key=key)

    def validate(self, request):
        key, token = self._subject()
        body = s.token_body(
            token,
            roles=selectors.token_role_names(token=token),
            include_catalog="nocatalog" not in request.query_params,
        )
        return Response({"token": body}, headers={"X-Subject-Token": key})

    def check(self, request):
        key, _ = self._subject()
        return Response(status=status.HTTP_200_OK, headers={"X-Subject-Token": key})

    def revoke(self, request):
        _, token = self._subject()
        services.token_revoke(token=token)
        return self.no_content()


class AuthScopeViewSet(IdentityViewSet):
    """What the caller's token may reach: GET /v3/auth/projects, /domains, /catalog."""

    def projects(self, request):
        projects = [s.project_body(p) for p in selectors.project_list(user=self.user).order_by("name")]
        return Response(s.collection(request, "projects", projects, "auth/projects"))

    def domains(self, request):
        domains = [s.domain_body(d) for d in selectors.domain_list_for_user(user=self.user)]
        return Response(s.collection(request, "domains", domains, "auth/domains"))

    def catalog(self, request):
        if self.project is None:
            raise PermissionDenied("A project-scoped token is required to produce a service catalog.")
        return Response(
            {
                "catalog": selectors.service_catalog(project=self.project),
                "links": {"self": s.identity_url("auth/catalog")},
            }
        )


# --- Domains, and the catalog as resources ----------------------------------------------------


class DomainViewSet(IdentityViewSet):
    """The one domain, `default`. Any user may read it (clients look it up by name or id);
    creating, changing or deleting domains is not implemented (501)."""

    admin_only = {"create", "update", "destroy"}

    def list(self, request):
        domains = selectors.domain_list(name=self.param("name"), enabled=self.flag("enabled"))
        return Response(s.collection(request, "domains", [s.domain_body(d) for d in domains], "domains"))

    def retrieve(self, request, pk):
        return Response({"domain": s.domain_body(selectors.domain_get(domain_id=pk))})

    def create(self, request):
        raise NotImplementedHere("cloudmgr has one domain, 'default'; creating domains is not implemented.")

    def update(self, request, pk):
        selectors.domain_get(domain_id=pk)
        raise NotImplementedHere("The default domain cannot be changed.")

    def destroy(self, request, pk):
        selectors.domain_get(domain_id=pk)
        raise NotImplementedHere("The default domain cannot be deleted.")


class CatalogViewSet(IdentityViewSet):
    """Read-only /v3/services, /v3/endpoints and /v3/regions, from the catalog (cloud admins)."""

    admin_only = True

    def _service_body(self, service):
        return {
            **service,
            "enabled": True,
            "description": "",
            "links": {"self": s.identity_url(f"services/{service['id']}")},
        }

    def _endpoint_body(self, endpoint):
        return {**endpoint, "enabled": True, "links": {"self": s.identity_url(f"endpoints/{endpoint['id']}")}}

    def _region_body(self):
        region = selectors.REGION
        return {
            "id": region,
            "description": "",
            "parent_region_id": None,
            "links": {"self": s.identity_url(f"regions/{region}")},
        }

    def service_list(self, request):
        services_ = [
            self._service_body(x)
            for x in selectors.service_list()
            if self.param("type") in (None, x["type"]) and self.param("name") in (None, x["name"])
        ]
        return Response(s.collection(request, "services", services_, "services"))

    def service_show(self, request, pk):
        found = [x for x in selectors.service_list() if x["id"] == pk]
        if not found:
            raise NotFound(f"Could not find service: {pk}.")
        return Response({"service": self._service_body(found[0])})

    def endpoint_list(self, request):
        params = {k: self.param(k) for k in ("interface", "service_id", "region_id")}
        endpoints = [
            self._endpoint_body(x)
            for x in selectors.endpoint_list()
            if all(v is None or x[k] == v for k, v in params.items())
        ]
        return Response(s.collection(request, "endpoints", endpoints, "endpoints"))

    def endpoint_show(self, request, pk):
        found = [x for x in selectors.endpoint_list() if x["id"] == pk]
        if not found:
            raise NotFound(f"Could not find endpoint: {pk}.")
        return Response({"endpoint": self._endpoint_body(found[0])})

    def region_list(self, request):
        return Response(s.collection(request, "regions", [self._region_body()], "regions"))

    def region_show(self, request, pk):
        if pk != selectors.REGION:
            raise NotFound(f"Could not find region: {pk}.")
        return Response({"region": self._region_body()})


# --- Projects ---------------------------------------------------------------------------------


class ProjectViewSet(IdentityViewSet):
    """Cloud admins manage projects; a user may list and read the projects they hold a role on."""

    admin_only = {"create", "update", "destroy"}

    def list(self, request):
        projects = selectors.project_list_visible(
            viewer=self.user,
            name=self.param("name"),
            enabled=self.flag("enabled"),
            domain_id=self.param("domain_id"),
            parent_id=self.param("parent_id"),
            is_domain=self.flag("is_domain"),
        )
        return Response(s.collection(request, "projects", [s.project_body(p) for p in projects], "projects"))

    def retrieve(self, request, pk):
        return Response({"project": s.project_body(selectors.project_show(viewer=self.user, project_id=pk))})

    def create(self, request):
        data = self.parse(s.ProjectCreate, "project")
        parent_id = data.get("parent_id")
        parent = None
        if parent_id and parent_id != DEFAULT_DOMAIN_ID:
            parent = selectors.project_by_id(project_id=parent_id)
        project = services.project_create(
            name=data["name"], description=data.get("description") or "", enabled=data["enabled"], parent=parent
        )
        return Response({"project": s.project_body(project)}, status=status.HTTP_201_CREATED)

    def update(self, request, pk):
        project = selectors.project_by_id(project_id=pk)
        data = self.parse(s.ProjectUpdate, "project")
        project = services.project_update(
            project=project, name=data.get("name"), description=data.get("description"), enabled=data.get("enabled")
        )
        return Response({"project": s.project_body(project)})

    def destroy(self, request, pk):
        services.project_delete(project=selectors.project_by_id(project_id=pk))
        return self.no_content()


class ProjectRoleViewSet(IdentityViewSet):
    """Role grants on projects, to users and groups (cloud admins):
    /v3/projects/{p}/users/{u}/roles[/{r}] and /v3/projects/{p}/groups/{g}/roles[/{r}]."""

    admin_only = True

    def _target(self, project_id, user_id=None, group_id=None):
        project = selectors.project_by_id(project_id=project_id)
        if user_id is not None:
            return project, selectors.user_by_id(user_id=user_id)
        return project, selectors.group_by_id(group_id=group_id)

    def _role(self, role_id):
        return selectors.role_get(role_id=role_id).name

    def user_roles(self, request, project_id, user_id):
        project, user = self._target(project_id, user_id=user_id)
        roles = [
            s.role_body(selectors.role_get(role_id=r)) for r in selectors.user_project_roles(user=user, project=project)
        ]
        return Response(s.collection(request, "roles", roles, f"projects/{project_id}/users/{user_id}/roles"))

    def user_grant(self, request, project_id, user_id, role_id):
        project, user = self._target(project_id, user_id=user_id)
        services.role_grant(user=user, project=project, role=self._role(role_id))
        return self.no_content()

    def user_check(self, request, project_id, user_id, role_id):
        project, user = self._target(project_id, user_id=user_id)
        role = self._role(role_id)
        if role not in selectors.user_project_roles(user=user, project=project):
            raise NotFound(
                f"Could not find role assignment with role: {role}, user or group: {user_id}, "
                f"project, domain, or system: {project_id}."
            )
        return self.no_content()

    def user_revoke(self, request, project_id, user_id, role_id):
        project, user = self._target(project_id, user_id=user_id)
        services.role_revoke(user=user, project=project, role=self._role(role_id))
        return self.no_content()

    def group_roles(self, request, project_id, group_id):
        project, group = self._target(project_id, group_id=group_id)
        roles = [
            s.role_body(selectors.role_get(role_id=r))
            for r in selectors.group_project_roles(group=group, project=project)
        ]
        return Response(s.collection(request, "roles", roles, f"projects/{project_id}/groups/{group_id}/roles"))

    def group_grant(self, request, project_id, group_id, role_id):
        project, group = self._target(project_id, group_id=group_id)
        services.group_role_grant(group=group, project=project, role=self._role(role_id))
        return self.no_content()

    def group_check(self, request, project_id, group_id, role_id):
        project, group = self._target(project_id, group_id=group_id)
        role = self._role(role_id)
        if role not in selectors.group_project_roles(group=group, project=project):
            raise NotFound(
                f"Could not find role assignment with role: {role}, user or group: {group_id}, "
                f"project, domain, or system: {project_id}."
            )
        return self.no_content()

    def group_revoke(self, request, project_id, group_id, role_id):
        project, group = self._target(project_id, group_id=group_id)
        services.group_role_revoke(group=group, project=project, role=self._role(role_id))
        return self.no_content()


class RoleAssignmentViewSet(IdentityViewSet):
    """GET /v3/role_assignments (cloud admins), with Keystone's filters."""

    admin_only = True

    def list(self, request):
        params = request.query_params
        user = selectors.user_by_id(user_id=params["user.id"]) if "user.id" in params else None
        group = selectors.group_by_id(group_id=params["group.id"]) if "group.id" in params else None
        project = (
            selectors.project_by_id(project_id=params["scope.project.id"]) if "scope.project.id" in params else None
        )
        role = selectors.role_get(role_id=params["role.id"]).name if "role.id" in params else None
        domain_id = params.get("scope.domain.id")
        if domain_id is not None:
            selectors.domain_get(domain_id=domain_id)
        effective = bool(self.flag("effective"))
        if effective and group is not None:
            raise ValidationError("Combining effective and group filter will always result in an empty list.")
        items = selectors.role_assignment_list(
            user=user,
            group=group,
            project=project,
            role=role,
            effective=effective,
            domain_scope=domain_id is not None or "scope.system" in params,
        )
        include_names = bool(self.flag("include_names"))
        bodies = [s.assignment_body(item, include_names=include_names) for item in items]
        return Response(s.collection(request, "role_assignments", bodies, "role_assignments"))


# --- Users ------------------------------------------------------------------------------------


class UserViewSet(IdentityViewSet):
    """Cloud admins manage users; a user may read (and list) themselves, list their projects and groups,
    and change their own password (with the original one, no token needed, as Keystone)."""

    admin_only = {"create", "update", "destroy"}

    def get_authenticators(self):
        # The schema generator builds views without a request.
        if self.request is not None and self.request.method == "POST" and self.request.path.endswith("/password"):
            return []
        return super().get_authenticators()

    def get_permissions(self):
        if self.request.method == "POST" and self.request.path.endswith("/password"):
            return []
        return super().get_permissions()

    def _default_project(self, data):
        if "default_project_id" not in data:
            return None
        project_id = data["default_project_id"]
        return selectors.project_by_id(project_id=project_id) if project_id else None

    def list(self, request):
        users = selectors.user_list(
            viewer=self.user, name=self.param("name"), enabled=self.flag("enabled"), domain_id=self.param("domain_id")
        )
        return Response(s.collection(request, "users", [s.user_body(u) for u in users], "users"))

    def retrieve(self, request, pk):
        return Response({"user": s.user_body(selectors.user_show(viewer=self.user, user_id=pk))})

    def create(self, request):
        data = self.parse(s.UserCreate, "user")
        user = services.user_create(
            username=data["name"],
            password=data.get("password"),
            email=data.get("email") or "",
            enabled=data["enabled"],
            description=data.get("description") or "",
            default_project=self._default_project(data),
        )
        return Response({"user": s.user_body(user)}, status=status.HTTP_201_CREATED)

    def update(self, request, pk):
        user = selectors.user_by_id(user_id=pk)
        data = self.parse(s.UserUpdate, "user")
        changes = {"default_project": self._default_project(data)} if "default_project_id" in data else {}
        user = services.user_update(
            user=user,
            enabled=data.get("enabled"),
            email=data.get("email"),
            name=data.get("name"),
            description=data.get("description"),
            password=data.get("password"),
            **changes,
        )
        return Response({"user": s.user_body(user)})

    def destroy(self, request, pk):
        services.user_delete(user=selectors.user_by_id(user_id=pk))
        return self.no_content()

    def change_password(self, request, pk):
        data = self.parse(s.PasswordChange, "user")
        try:
            user = selectors.user_by_id(user_id=pk)
        except NotFound as exc:
            raise NotAuthenticated("The request you have made requires authentication.") from exc
        failures = LoginFailures(request._request, user.username)
        failures.check()
        try:
            services.user_change_password(
                user=user, original_password=data["original_password"], password=data["password"]
            )
        except NotAuthenticated:
            failures.record()
            raise
        return self.no_content()

    def projects(self, request, pk):
        user = selectors.user_show(viewer=self.user, user_id=pk, action="list_user_projects")
        projects = selectors.project_list(user=user).order_by("name")
        if (name := self.param("name")) is not None:
            projects = projects.filter(name=name)
        return Response(
            s.collection(request, "projects", [s.project_body(p) for p in projects], f"users/{pk}/projects")
        )

    def groups(self, request, pk):
        user = selectors.user_show(viewer=self.user, user_id=pk, action="list_groups_for_user")
        groups = selectors.group_list(user=user)
        return Response(s.collection(request, "groups", [s.group_body(g) for g in groups], f"users/{pk}/groups"))


class ApplicationCredentialViewSet(IdentityViewSet):
    """/v3/users/{id}/application_credentials: a user manages their own (created with a
    project-scoped token, for its project); a cloud admin may also list, read and delete others'.
    Another user's credential is 404 under your own path."""

    def _owner(self, user_id, action):
        return selectors.user_show(viewer=self.user, user_id=user_id, action=action)

    def list(self, request, user_id):
        owner = self._owner(user_id, "list_application_credentials")
        credentials = selectors.application_credential_list(user=owner, name=self.param("name"))
        bodies = [s.application_credential_body(c) for c in credentials]
        return Response(
            s.collection(request, "application_credentials", bodies, f"users/{user_id}/application_credentials")
        )

    def retrieve(self, request, user_id, pk):
        owner = self._owner(user_id, "get_application_credential")
        credential = selectors.application_credential_get(user=owner, credential_id=pk)
        return Response({"application_credential": s.application_credential_body(credential)})

    def create(self, request, user_id):
        owner = selectors.user_self(viewer=self.user, user_id=user_id, action="create_application_credential")
        if self.project is None:
            raise PermissionDenied("A project-scoped token is required to create an application credential.")
        data = self.parse(s.ApplicationCredentialCreate, "application_credential")
        roles = None
        if data.get("roles"):
            roles = [selectors.role_get(role_id=ref.get("id") or ref["name"]).name for ref in data["roles"]]
        secret, credential = services.application_credential_create(
            user=owner,
            project=self.project,
            name=data["name"],
            description=data.get("description") or "",
            expires_at=data.get("expires_at"),
            roles=roles,
            secret=data.get("secret"),
            unrestricted=bool(data.get("unrestricted")),
            acting_credential=self.acting_credential,
        )
        body = s.application_credential_body(credential, secret=secret)
        return Response({"application_credential": body}, status=status.HTTP_201_CREATED)

    def destroy(self, request, user_id, pk):
        owner = self._owner(user_id, "delete_application_credential")
        credential = selectors.application_credential_get(user=owner, credential_id=pk)
        services.application_credential_delete(
            user=self.user, credential=credential, acting_credential=self.acting_credential
        )
        return self.no_content()


# --- Groups -----------------------------------------------------------------------------------


class GroupViewSet(IdentityViewSet):
    """Groups and their members (cloud admins)."""

    admin_only = True

    def list(self, request):
        groups = selectors.group_list(name=self.param("name"), domain_id=self.param("domain_id"))
        return Response(s.collection(request, "groups", [s.group_body(g) for g in groups], "groups"))

    def retrieve(self, request, pk):
        return Response({"group": s.group_body(selectors.group_by_id(group_id=pk))})

    def create(self, request):
        data = self.parse(s.GroupCreate, "group")
        group = services.group_create(name=data["name"], description=data.get("description") or "")
        return Response({"group": s.group_body(group)}, status=status.HTTP_201_CREATED)

    def update(self, request, pk):
        group = selectors.group_by_id(group_id=pk)
        data = self.parse(s.GroupUpdate, "group")
        group = services.group_update(group=group, name=data.get("name"), description=data.get("description"))
        return Response({"group": s.group_body(group)})

    def destroy(self, request, pk):
        services.group_delete(group=selectors.group_by_id(group_id=pk))
        return self.no_content()

    def members(self, request, pk):
        group = selectors.group_by_id(group_id=pk)
        users = [s.user_body(u) for u in selectors.group_member_list(group=group)]
        return Response(s.collection(request, "users", users, f"groups/{pk}/users"))

    def _pair(self, pk, user_id):
        return selectors.group_by_id(group_id=pk), selectors.user_by_id(user_id=user_id)

    def add_member(self, request, pk, user_id):
        group, user = self._pair(pk, user_id)
        services.group_add_user(group=group, user=user)
        return self.no_content()

    def check_member(self, request, pk, user_id):
        group, user = self._pair(pk, user_id)
        if not selectors.group_has_user(group=group, user=user):
            raise NotFound(f"User {user_id} is not in group {pk}.")
        return self.no_content()

    def remove_member(self, request, pk, user_id):
        group, user = self._pair(pk, user_id)
        services.group_remove_user(group=group, user=user)
        return self.no_content()


# --- Roles ------------------------------------------------------------------------------------


class RoleViewSet(IdentityViewSet):
    """Roles (cloud admins): the default admin, member and reader, and custom ones."""

    admin_only = True

    def list(self, request):
        roles = selectors.role_list(name=self.param("name"), domain_id=self.param("domain_id"))
        return Response(s.collection(request, "roles", [s.role_body(r) for r in roles], "roles"))

    def retrieve(self, request, pk):
        return Response({"role": s.role_body(selectors.role_get(role_id=pk))})

    def create(self, request):
        data = self.parse(s.RoleCreate, "role")
        role = services.role_create(name=data["name"], description=data.get("description") or "")
        return Response({"role": s.role_body(selectors.role_get(role_id=role.name))}, status=status.HTTP_201_CREATED)

    def update(self, request, pk):
        data = self.parse(s.RoleUpdate, "role")
        role = services.role_update(name=pk, new_name=data.get("name"), description=data.get("description"))
        return Response({"role": s.role_body(selectors.role_get(role_id=role.name))})

    def destroy(self, request, pk):
        services.role_delete(name=pk)
        return self.no_content()
