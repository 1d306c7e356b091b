"""Neutron v2.0 over the service layer. Each view parses (serializers.parse), calls a selector or
one service, and renders Neutron's body; lists take Neutron's filters (filtersets), ``fields``,
sorting (``sort_key``/``sort_dir``) and paging (``limit``/``marker``/``page_reverse``)."""

from urllib.parse import urlencode

from django.db import transaction
from django.db.models import Q, QuerySet
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.networks import filtersets, selectors, services
from apps.networks.api import serializers as s
from apps.networks.errors import bad_request, forbidden, not_found
from apps.tenants.models import Project
from apps.tenants.selectors import role_can_write
from cloudmgr.api.errors import error_body, exception_handler
from cloudmgr.api.pagination import MAX_LIMIT
from cloudmgr.api.permissions import request_role
from cloudmgr.api.versions import link, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet
from cloudmgr.models import filter_pk

# The extensions of Neutron's API that cloudmgr implements, exactly (clients branch on them).
EXTENSIONS = [
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs", "2013-07-23T10:00:00-00:00"),
    ("auto-allocated-topology", "Auto Allocated Topology Services", "Auto Allocated Topology Services.",
     "2016-01-01T00:00:00-00:00"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application",
     "2014-02-03T10:00:00-00:00"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource.",
     "2013-01-14T10:00:00-00:00"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode",
     "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
     "2013-03-28T10:00:00-00:00"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router", "2013-02-01T10:00:00-00:00"),
    ("extraroute-atomic", "Atomically add/remove extra routes",
     "Edit extra routes of a router on server side by atomically adding/removing extra routes",
     "2019-07-10T00:00:00-00:00"),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter parameters.",
     "2018-03-21T10:00:00-00:00"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"),
    ("net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource.",
     "2017-07-12T00:00:00-00:00"),
    ("network-ip-availability", "Network IP Availability", "Provides IP availability data for each network and "
     "subnet.", "2015-09-24T00:00:00-00:00"),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled.",
     "2016-06-12T00:00:00-00:00"),
    ("port-security", "Port Security", "Provides port security", "2012-07-23T10:00:00-00:00"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.",
     "2016-09-09T09:09:09-09:09"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks",
     "2012-09-07T10:00:00-00:00"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project",
     "2012-07-29T10:00:00-00:00"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per "
     "project", "2017-02-10T10:00:00-00:00"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and "
     "access to external networks via a NAT gateway.", "2012-07-20T10:00:00-00:00"),
    ("security-group", "security-group", "The security groups extension.", "2012-10-05T10:00:00-00:00"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00"),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard "
     "attributes", "2016-02-10T10:00:00-00:00"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of "
     "neutron resources.", "2016-04-11T10:00:00-00:00"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron "
     "resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00"),
]

RESOURCES = [("network", "networks"), ("subnet", "subnets"), ("port", "ports"), ("router", "routers"),
             ("floatingip", "floatingips"), ("security_group", "security-groups"),
             ("security_group_rule", "security-group-rules"), ("quota", "quotas"),
             ("network_ip_availability", "network-ip-availabilities"),
             ("auto_allocated_topology", "auto-allocated-topology")]


def _version() -> dict:
    return {"id": "v2.0", "status": "CURRENT", "links": [link("self", public_url("network/v2.0/"))]}


class VersionsView(APIView):
    """GET /network and /network/: 200 with the one version, as Neutron."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response({"versions": [_version()]})


class ResourcesView(APIView):
    """GET /network/v2.0/: the collections of the API."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response({"resources": [
            {"name": name, "collection": collection,
             "links": [link("self", public_url(f"network/v2.0/{collection}"))]} for name, collection in RESOURCES]})


def neutron_exception_handler(exc, context):
    """cloudmgr's handler, with Neutron's error type when the service gave one, and Keystone's
    body for a 401 (it comes from the token middleware in OpenStack)."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == 401:
        response.data = error_body("keystone", 401, response.data["NeutronError"]["message"])
    elif getattr(exc, "neutron_type", None):
        response.data["NeutronError"]["type"] = exc.neutron_type
    return response


class AnyAccept(DefaultContentNegotiation):
    """Neutron answers JSON whatever the Accept header says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class NeutronViewSet(ProjectScopedViewSet):
    error_style = "neutron"
    content_negotiation_class = AnyAccept

    def get_exception_handler(self):
        return neutron_exception_handler

    @property
    def admin(self) -> bool:
        return selectors.viewer_is_admin(self.user)

    def fields(self) -> list[str]:
        return self.request.query_params.getlist("fields")

    def owner(self, data: dict) -> Project:
        """The project a new object belongs to: the token's, or (admins only) the one named by
        ``tenant_id``/``project_id``."""
        given = data.pop("project_id", None) or data.pop("tenant_id", None)
        data.pop("tenant_id", None)
        if not given or given.replace("-", "") == self.project.pk.hex:
            return self.project
        if not self.admin:
            raise bad_request("Specifying 'project_id' or 'tenant_id' other than the authenticated project in "
                              "request requires admin privileges")
        project = filter_pk(Project.objects.all(), given).first()
        if project is None:
            raise bad_request(f"Project {given} does not exist.")
        return project


def _page_links(request, page: list, *, more: bool, reverse: bool, limit: int, collection: str) -> dict:
    if not limit:
        return {}
    params = {k: v for k, v in request.query_params.lists() if k not in ("marker", "page_reverse", "limit")}
    base = request.build_absolute_uri(request.path)
    links = []
    marker = request.query_params.get("marker")
    has_next, has_previous = (bool(marker), more) if reverse else (more, bool(marker))
    if has_next and page:
        query = urlencode({**params, "limit": limit, "marker": str(page[-1].pk)}, doseq=True)
        links.append(link("next", f"{base}?{query}"))
    if has_previous and page:
        query = urlencode({**params, "limit": limit, "marker": str(page[0].pk), "page_reverse": "True"}, doseq=True)
        links.append(link("previous", f"{base}?{query}"))
    return {f"{collection}_links": links} if links else {}


def neutron_page(request, queryset: QuerySet, *, collection: str, sort_keys: dict[str, str]) -> tuple[list, dict]:
    """Neutron's sorting and paging: ``sort_key``/``sort_dir`` pairs (id last, as tie-break),
    ``limit`` (at most MAX_LIMIT), ``marker`` (the last id seen; keyset paging) and
    ``page_reverse``; ``<collection>_links`` holds next/previous."""
    params = request.query_params
    keys, dirs = params.getlist("sort_key"), params.getlist("sort_dir")
    if dirs and len(dirs) != len(keys):
        raise bad_request("The number of sort_keys and sort_dirs must be same")
    order: list[tuple[str, bool]] = []
    for i, key in enumerate(keys):
        if key not in sort_keys:
            raise bad_request(f"{key} is an invalid attribute for sort_key")
        direction = (dirs[i] if dirs else "asc").lower()
        if direction not in ("asc", "desc"):
            raise bad_request(f"{direction} is an invalid value for sort_dir, valid values are 'asc' and 'desc'")
        order.append((sort_keys[key], direction == "desc"))
    if not order:
        order.append(("created_at", False))
    order.append(("id", order[-1][1]))
    try:
        limit = int(params.get("limit") or 0)
    except ValueError:
        raise bad_request(f"Limit must be an integer 0 or greater and not '{params.get('limit')}'") from None
    if limit < 0:
        raise bad_request(f"Limit must be an integer 0 or greater and not '{limit}'")
    limit = min(limit, MAX_LIMIT)
    reverse = str(params.get("page_reverse", "false")).lower() == "true"
    if reverse:
        order = [(field, not desc) for field, desc in order]
    if marker := params.get("marker"):
        anchor = filter_pk(queryset, marker).values(*[field for field, _ in order]).first()
        if anchor is None:
            raise bad_request(f"marker [{marker}] not found")
        after = Q()
        for i, (field, desc) in enumerate(order):
            step = Q(**{f"{field}__{'lt' if desc else 'gt'}": anchor[field]})
            for previous, _ in order[:i]:
                step &= Q(**{previous: anchor[previous]})
            after |= step
        queryset = queryset.filter(after)
    queryset = queryset.order_by(*[("-" if desc else "") + field for field, desc in order])
    rows = list(queryset[:limit + 1]) if limit else list(queryset)
    more = bool(limit) and len(rows) > limit
    page = rows[:limit] if limit else rows
    if reverse:
        page.reverse()
    return page, _page_links(request, page, more=more, reverse=reverse, limit=limit, collection=collection)


_STANDARD_SORT = {"id": "id", "tenant_id": "project_id", "project_id": "project_id", "created_at": "created_at",
                  "updated_at": "updated_at", "revision_number": "revision_number", "description": "description"}


class ResourceViewSet(NeutronViewSet):
    """List, show, create (one or a bulk list), update and delete of one Neutron collection."""

    resource = ""
    collection = ""
    attributes: dict = {}
    filterset = None
    sort_keys: dict[str, str] = {}

    def queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_object(self, pk):
        raise NotImplementedError

    def render(self, obj) -> dict:
        raise NotImplementedError

    def create_one(self, data: dict):
        raise NotImplementedError

    def list(self, request):
        objects = filtersets.apply(self.filterset, request.query_params, self.queryset())
        page, links = neutron_page(request, objects, collection=self.collection,
                                   sort_keys={**_STANDARD_SORT, **self.sort_keys})
        fields = self.fields()
        return Response({self.collection: [s.only_fields(self.render(o), fields) for o in page], **links})

    def retrieve(self, request, pk):
        return Response({self.resource: s.only_fields(self.render(self.get_object(pk)), self.fields())})

    def create(self, request):
        data = request.data
        if isinstance(data, dict) and isinstance(data.get(self.collection), list):
            items = data[self.collection]
            if not items:
                raise bad_request(f"Resources required: the list '{self.collection}' is empty.")
            with transaction.atomic():  # Neutron's bulk create: all or nothing
                created = [self.create_one(s.parse(item, self.attributes, method="POST")) for item in items]
            bodies = [self.render(self.get_object(obj.pk)) for obj in created]
            return Response({self.collection: bodies}, status=status.HTTP_201_CREATED)
        obj = self.create_one(s.parse(self.body(self.resource), self.attributes, method="POST"))
        return Response({self.resource: self.render(self.get_object(obj.pk))}, status=status.HTTP_201_CREATED)

    def changes(self) -> dict:
        return s.parse(self.body(self.resource), self.attributes, method="PUT")


class NetworkViewSet(ResourceViewSet):
    resource, collection, attributes = "network", "networks", s.NETWORK
    filterset = filtersets.NetworkFilterSet
    sort_keys = {"name": "name", "status": "status", "admin_state_up": "admin_state_up", "shared": "shared",
                 "router:external": "external", "mtu": "mtu"}

    def queryset(self):
        return selectors.network_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.network_get(user=self.user, project=self.project, network_id=pk)

    def render(self, network):
        return s.network_body(network, admin=self.admin)

    def create_one(self, data):
        project = self.owner(data)
        return services.network_create(user=self.user, project=project, **data)

    def update(self, request, pk):
        network = services.network_update(network=self.get_object(pk), user=self.user, project=self.project,
                                          changes=self.changes())
        return Response({"network": self.render(self.get_object(network.pk))})

    def destroy(self, request, pk):
        services.network_delete(network=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubnetViewSet(ResourceViewSet):
    resource, collection, attributes = "subnet", "subnets", s.SUBNET
    filterset = filtersets.SubnetFilterSet
    sort_keys = {"name": "name", "network_id": "network_id", "ip_version": "ip_version", "cidr": "cidr",
                 "enable_dhcp": "enable_dhcp"}

    def queryset(self):
        return selectors.subnet_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.subnet_get(user=self.user, project=self.project, subnet_id=pk)

    def render(self, subnet):
        return s.subnet_body(subnet)

    def create_one(self, data):
        project = self.owner(data)
        data.pop("subnetpool_id", None)
        data.pop("segment_id", None)
        if "network_id" not in data:
            raise bad_request("Failed to parse request. Required attribute 'network_id' not specified")
        network = selectors.network_get(user=self.user, project=self.project, network_id=data.pop("network_id"))
        if "gateway_ip" not in data:
            data["gateway_ip"] = services.UNSET
        return services.subnet_create(user=self.user, project=project, network=network,
                                      cidr=data.pop("cidr", None), **data)

    def update(self, request, pk):
        subnet = services.subnet_update(subnet=self.get_object(pk), user=self.user, project=self.project,
                                        changes=self.changes())
        return Response({"subnet": self.render(self.get_object(subnet.pk))})

    def destroy(self, request, pk):
        services.subnet_delete(subnet=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PortViewSet(ResourceViewSet):
    resource, collection, attributes = "port", "ports", s.PORT
    filterset = filtersets.PortFilterSet
    sort_keys = {"name": "name", "status": "status", "network_id": "network_id", "mac_address": "mac_address",
                 "device_id": "device_id", "device_owner": "device_owner", "admin_state_up": "admin_state_up"}

    def queryset(self):
        return selectors.port_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.port_get(user=self.user, project=self.project, port_id=pk)

    def render(self, port):
        return s.port_body(port, admin=self.admin)

    def create_one(self, data):
        project = self.owner(data)
        data.pop("binding:vnic_type", None)
        data.pop("binding:profile", None)
        if "network_id" not in data:
            raise bad_request("Failed to parse request. Required attribute 'network_id' not specified")
        network = selectors.network_get(user=self.user, project=self.project, network_id=data.pop("network_id"))
        return services.port_create(user=self.user, project=project, network=network, **data)

    def update(self, request, pk):
        changes = self.changes()
        changes.pop("binding:vnic_type", None)
        changes.pop("binding:profile", None)
        port = services.port_update(port=self.get_object(pk), user=self.user, project=self.project, changes=changes)
        return Response({"port": self.render(self.get_object(port.pk))})

    def destroy(self, request, pk):
        services.port_delete(port=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RouterViewSet(ResourceViewSet):
    resource, collection, attributes = "router", "routers", s.ROUTER
    filterset = filtersets.RouterFilterSet
    sort_keys = {"name": "name", "status": "status", "admin_state_up": "admin_state_up"}

    def queryset(self):
        return selectors.router_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.router_get(user=self.user, project=self.project, router_id=pk)

    def render(self, router):
        return s.router_body(router)

    def create_one(self, data):
        project = self.owner(data)
        return services.router_create(user=self.user, project=project, **data)

    def update(self, request, pk):
        router = services.router_update(router=self.get_object(pk), user=self.user, project=self.project,
                                        changes=self.changes())
        return Response({"router": self.render(self.get_object(router.pk))})

    def destroy(self, request, pk):
        services.router_delete(router=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _interface_args(self) -> dict:
        data = self.request.data
        if not isinstance(data, dict) or set(data) - {"subnet_id", "port_id"}:
            raise bad_request("The body must be an object with subnet_id or port_id.")
        return {"subnet_id": data.get("subnet_id"), "port_id": data.get("port_id")}

    def add_interface(self, request, pk):
        info = services.router_interface_add(router=self.get_object(pk), user=self.user, project=self.project,
                                             **self._interface_args())
        return Response(info)

    def remove_interface(self, request, pk):
        info = services.router_interface_remove(router=self.get_object(pk), user=self.user, project=self.project,
                                                **self._interface_args())
        return Response(info)

    def _routes(self) -> list:
        body = self.body("router")
        if set(body) != {"routes"} or not isinstance(body["routes"], list):
            raise bad_request("The body must be {\"router\": {\"routes\": [...]}}.")
        return body["routes"]

    def add_routes(self, request, pk):
        router = services.router_routes_change(router=self.get_object(pk), user=self.user, project=self.project,
                                               routes=self._routes(), add=True)
        return Response({"router": self.render(self.get_object(router.pk))})

    def remove_routes(self, request, pk):
        router = services.router_routes_change(router=self.get_object(pk), user=self.user, project=self.project,
                                               routes=self._routes(), add=False)
        return Response({"router": self.render(self.get_object(router.pk))})


class FloatingIPViewSet(ResourceViewSet):
    resource, collection, attributes = "floatingip", "floatingips", s.FLOATINGIP
    filterset = filtersets.FloatingIPFilterSet
    sort_keys = {"status": "status", "floating_ip_address": "floating_ip_address",
                 "floating_network_id": "floating_network_id"}

    def queryset(self):
        return selectors.floating_ip_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.floating_ip_get(user=self.user, project=self.project, floating_ip_id=pk)

    def render(self, fip):
        return s.floating_ip_body(fip)

    def create_one(self, data):
        project = self.owner(data)
        if "floating_network_id" not in data:
            raise bad_request("Failed to parse request. Required attribute 'floating_network_id' not specified")
        return services.floating_ip_create(user=self.user, project=project, **data)

    def update(self, request, pk):
        fip = services.floating_ip_update(fip=self.get_object(pk), user=self.user, project=self.project,
                                          changes=self.changes())
        return Response({"floatingip": self.render(self.get_object(fip.pk))})

    def destroy(self, request, pk):
        services.floating_ip_delete(fip=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecurityGroupViewSet(ResourceViewSet):
    resource, collection, attributes = "security_group", "security_groups", s.SECURITY_GROUP
    filterset = filtersets.SecurityGroupFilterSet
    sort_keys = {"name": "name"}

    def queryset(self):
        return selectors.security_group_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.security_group_get(user=self.user, project=self.project, group_id=pk)

    def render(self, group):
        return s.security_group_body(group)

    def list(self, request):
        # Neutron makes a project's default group the first time the project looks at its groups.
        services.security_group_default(project=self.project)
        return super().list(request)

    def create_one(self, data):
        project = self.owner(data)
        return services.security_group_create(user=self.user, project=project, name=data.get("name", ""),
                                              description=data.get("description", ""))

    def update(self, request, pk):
        group = services.security_group_update(group=self.get_object(pk), user=self.user, project=self.project,
                                               changes=self.changes())
        return Response({"security_group": self.render(self.get_object(group.pk))})

    def destroy(self, request, pk):
        services.security_group_delete(group=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecurityGroupRuleViewSet(ResourceViewSet):
    resource, collection, attributes = "security_group_rule", "security_group_rules", s.SECURITY_GROUP_RULE
    filterset = filtersets.SecurityGroupRuleFilterSet
    sort_keys = {"direction": "direction", "ethertype": "ethertype", "security_group_id": "security_group_id"}

    def queryset(self):
        return selectors.security_group_rule_list(user=self.user, project=self.project)

    def get_object(self, pk):
        return selectors.security_group_rule_get(user=self.user, project=self.project, rule_id=pk)

    def render(self, rule):
        return s.rule_body(rule)

    def create_one(self, data):
        data.pop("project_id", None)
        data.pop("tenant_id", None)
        for required in ("security_group_id", "direction"):
            if required not in data:
                raise bad_request(f"Failed to parse request. Required attribute '{required}' not specified")
        group = selectors.security_group_get(user=self.user, project=self.project,
                                             group_id=data.pop("security_group_id"))
        return services.security_group_rule_create(user=self.user, project=self.project, group=group, **data)

    def destroy(self, request, pk):
        services.security_group_rule_delete(rule=self.get_object(pk), user=self.user, project=self.project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExtensionViewSet(NeutronViewSet):
    @staticmethod
    def _body(alias, name, description, updated) -> dict:
        return {"alias": alias, "name": name, "description": description, "updated": updated, "links": []}

    def list(self, request):
        return Response({"extensions": [self._body(*e) for e in EXTENSIONS]})

    def retrieve(self, request, alias):
        for extension in EXTENSIONS:
            if extension[0] == alias:
                return Response({"extension": self._body(*extension)})
        raise not_found("Extension", alias)


def _uuids(values: list[str]) -> list:
    """The values that are ids (a filter value that cannot be one matches nothing)."""
    found = []
    for value in values:
        try:
            found.append(filtersets.to_uuid(value))
        except ValueError:
            continue
    return found


class NetworkIPAvailabilityViewSet(NeutronViewSet):
    admin_only = True
    FILTERS = {"network_id", "network_name", "tenant_id", "project_id", "ip_version", "fields"}

    def _networks(self):
        params = self.request.query_params
        unknown = sorted(set(params) - self.FILTERS)
        if unknown:
            raise bad_request(f"[{', '.join(unknown)}] is invalid attribute for filtering")
        networks = selectors.network_list(user=self.user, project=self.project)
        if params.getlist("network_id"):
            networks = networks.filter(pk__in=_uuids(params.getlist("network_id")))
        if params.getlist("network_name"):
            networks = networks.filter(name__in=params.getlist("network_name"))
        owners = params.getlist("project_id") + params.getlist("tenant_id")
        if owners:
            networks = networks.filter(project_id__in=_uuids(owners))
        if params.getlist("ip_version"):
            versions = [v for v in params.getlist("ip_version") if v in ("4", "6")]
            networks = networks.filter(subnets__ip_version__in=versions).distinct()
        return networks.order_by("created_at")

    def list(self, request):
        networks = list(self._networks())
        availability = selectors.network_ip_availability(networks=networks)
        fields = self.fields()
        return Response({"network_ip_availabilities": [
            s.only_fields(s.ip_availability_body(n, availability.get(n.pk, [])), fields) for n in networks]})

    def retrieve(self, request, pk):
        network = selectors.network_get(user=self.user, project=self.project, network_id=pk)
        availability = selectors.network_ip_availability(networks=[network])
        return Response({"network_ip_availability": s.only_fields(
            s.ip_availability_body(network, availability.get(network.pk, [])), self.fields())})


class QuotaViewSet(NeutronViewSet):
    admin_only = {"list", "update", "destroy"}

    def _target(self, project_id) -> Project:
        project = filter_pk(Project.objects.all(), project_id).first()
        if project is None:
            raise not_found("Project", project_id)
        if project.pk != self.project.pk and not self.admin:
            raise forbidden("Non-admin is not authorized to access quotas for another project")
        return project

    @staticmethod
    def _limits(project: Project) -> dict:
        return {name: limit for name, (limit, _) in selectors.network_quota(project=project).items()}

    def list(self, request):
        return Response({"quotas": [{**self._limits(p), "tenant_id": p.pk.hex, "project_id": p.pk.hex}
                                    for p in selectors.network_quota_projects()]})

    def retrieve(self, request, pk):
        return Response({"quota": self._limits(self._target(pk))})

    def defaults(self, request, pk):
        self._target(pk)
        return Response({"quota": selectors.network_quota_defaults()})

    def details(self, request, pk):
        quota = selectors.network_quota(project=self._target(pk))
        return Response({"quota": {name: {"limit": limit, "used": used, "reserved": 0}
                                   for name, (limit, used) in quota.items()}})

    def update(self, request, pk):
        project = self._target(pk)
        services.network_quota_update(project=project, limits=self.body("quota"))
        return Response({"quota": self._limits(project)})

    def destroy(self, request, pk):
        services.network_quota_reset(project=self._target(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AutoAllocatedTopologyViewSet(NeutronViewSet):
    def _project(self, project_id) -> Project:
        if project_id.replace("-", "") != self.project.pk.hex:
            if not self.admin:
                raise forbidden("(rule:get_auto_allocated_topology) is disallowed by policy")
            project = filter_pk(Project.objects.all(), project_id).first()
            if project is None:
                raise not_found("Project", project_id)
            return project
        return self.project

    def retrieve(self, request, pk):
        project = self._project(pk)
        if not role_can_write(request_role(request)) and not self.admin:
            raise forbidden("(rule:get_auto_allocated_topology) is disallowed by policy: it may create the topology.")
        network = services.auto_allocated_topology_get(user=self.user, project=project)
        return Response({"auto_allocated_topology": {"id": str(network.pk), "tenant_id": project.pk.hex,
                                                     "project_id": project.pk.hex}})

    def destroy(self, request, pk):
        services.auto_allocated_topology_delete(user=self.user, project=self._project(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
