import ipaddress
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.hosts.models import Host
from apps.hosts.selectors import aggregate_get, aggregate_list, host_get, host_list, host_uptime, hosts_matching
from apps.hosts.services import (
    aggregate_add_host,
    aggregate_create,
    aggregate_delete,
    aggregate_remove_host,
    aggregate_set_metadata,
    aggregate_update,
    host_disable,
    host_enable,
    host_force_down,
)
from apps.images.selectors import image_get
from apps.instances import services
from apps.instances.api import serializers as s
from apps.instances.models import Flavor, Instance, ServerGroup
from apps.instances.selectors import (
    ADMIN_SERVER_FILTERS,
    MIGRATION_FILTERS,
    flavor_get,
    flavor_list,
    host_usage,
    host_usage_by_project,
    hosts_servers,
    hosts_usage,
    instance_actions,
    instance_console_log,
    instance_diagnostics,
    instance_get,
    instance_page,
    instance_tags,
    keypair_get,
    keypair_list,
    migration_list,
    server_group_get,
    server_group_list,
    usage_report,
)
from apps.networks.selectors import (
    server_addresses,
    server_port_get,
    server_ports,
    server_security_group_details,
    server_security_groups,
)
from apps.tenants.models import Project, Quota
from apps.tenants.selectors import is_cloud_admin
from apps.tenants.services import quota_set
from apps.volumes.api.serializers import block_device_mapping_v2, resolve_block_devices
from apps.volumes.selectors import servers_volumes
from cloudmgr.api.microversions import MicroversionMixin, Version, supports
from cloudmgr.api.pagination import MAX_LIMIT, page_limit, query_flag
from cloudmgr.api.versions import UPDATED, link, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet, only_field, only_keys
from cloudmgr.exceptions import NotFound, NotImplementedHere, PermissionDenied, ValidationError
from cloudmgr.models import filter_pk

MIN_VERSION = Version(2, 1)
# Raised only when every change up to it is honoured (docs/compute.md): the SDK uses the maximum.
MAX_VERSION = Version(2, 28)


def _version_v21() -> dict:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(MAX_VERSION),
        "min_version": str(MIN_VERSION),
        "updated": UPDATED,
        "links": [link("self", public_url("compute/v2.1/"))],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }


def _version_v20() -> dict:
    return {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [link("self", public_url("compute/v2/"))],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}],
    }


class ComputeVersionsView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response({"versions": [_version_v20(), _version_v21()]})


class ComputeVersionView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response({"version": _version_v21()})


class EmptyAcceptNegotiation(DefaultContentNegotiation):
    """openstacksdk sends server actions with ``Accept:`` empty; treat that as ``*/*`` (as Nova
    does) instead of DRF's 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if not request.META.get("HTTP_ACCEPT", "").strip():
            request.META["HTTP_ACCEPT"] = "*/*"
        return super().select_renderer(request, renderers, format_suffix)


# oslo's bool_from_string, which Nova's server list reads ``deleted`` with.
BOOL_TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
# Nova's remote console schema (2.6); 2.8 adds mks/webmks. Guests serve VNC only: the others are
# valid requests that the console service refuses with a 400 (as Nova with them disabled).
REMOTE_CONSOLE_PROTOCOLS = ("vnc", "spice", "serial", "rdp")
REMOTE_CONSOLE_TYPES = ("novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5")


def _console_field(body, field: str, allowed: tuple[str, ...], key: str, others: tuple[str, ...] = ()) -> str:
    """``body[field]``, one of ``allowed``; 400 with Nova's schema messages otherwise."""
    if not isinstance(body, dict):
        raise ValidationError(f"Invalid input for field/attribute {key}: it must be an object.")
    only_keys(body, {field, *others}, key)
    if field not in body:
        raise ValidationError(f"Invalid input for field/attribute {key}. '{field}' is a required property")
    value = body[field]
    if value not in allowed:
        raise ValidationError(f"Invalid input for field/attribute {field}. Value: {value}. "
                              f"{value!r} is not one of {list(allowed)}")
    return value


class ComputeViewSet(MicroversionMixin, ProjectScopedViewSet):
    content_negotiation_class = EmptyAcceptNegotiation
    error_style = "nova"
    service_type = "compute"
    legacy_header = "X-OpenStack-Nova-API-Version"
    min_version = MIN_VERSION
    max_version = MAX_VERSION


class FlavorViewSet(ComputeViewSet):
    admin_only = {"create", "destroy", "extra_specs_create", "extra_spec_update", "extra_spec_destroy",
                  "flavor_action"}

    def create(self, request):
        parsed = s.FlavorCreateSerializer(data=self.body("flavor"))
        parsed.is_valid(raise_exception=True)
        d = parsed.validated_data
        body = self.body("flavor")
        flavor = services.flavor_create(
            name=d["name"], flavor_id=d.get("id"), ram=d["ram"], vcpus=d["vcpus"], disk=d["disk"],
            swap=d.get("swap") or 0, rxtx_factor=d.get("rxtx_factor") or 1.0,
            ephemeral=int(body.get("OS-FLV-EXT-DATA:ephemeral") or 0),
            is_public=bool(body.get("os-flavor-access:is_public", True)), description=d.get("description") or "",
        )
        return Response({"flavor": s.flavor_detail(flavor)})

    def _admin_flavor(self, pk) -> Flavor:
        flavor = Flavor.objects.filter(pk=pk, disabled=False).first()
        if flavor is None:
            raise NotFound(f"Flavor {pk} could not be found.")
        return flavor

    def destroy(self, request, pk):
        services.flavor_delete(flavor=self._admin_flavor(pk))
        return Response(status=status.HTTP_202_ACCEPTED)

    def extra_specs_list(self, request, pk):
        return Response({"extra_specs": dict(flavor_get(user=self.user, name_or_id=pk, project=self.project).extra_specs)})

    def extra_specs_create(self, request, pk):
        specs = services.flavor_extra_specs_set(flavor=self._admin_flavor(pk), specs=self.request.data.get("extra_specs"))
        return Response({"extra_specs": specs})

    def extra_spec_show(self, request, pk, key):
        specs = flavor_get(user=self.user, name_or_id=pk, project=self.project).extra_specs
        if key not in specs:
            raise NotFound(f"Flavor {pk} has no extra specs with key {key}.")
        return Response({key: specs[key]})

    def extra_spec_update(self, request, pk, key):
        data = self.request.data
        if not isinstance(data, dict) or list(data) != [key]:
            raise ValidationError("The request body must hold exactly the key of the URL.")
        services.flavor_extra_specs_set(flavor=self._admin_flavor(pk), specs=data)
        return Response({key: str(data[key])})

    def extra_spec_destroy(self, request, pk, key):
        services.flavor_extra_spec_delete(flavor=self._admin_flavor(pk), key=key)
        return Response(status=status.HTTP_202_ACCEPTED)

    def _access_body(self, flavor):
        return Response({"flavor_access": [{"flavor_id": flavor.id, "tenant_id": p.pk.hex}
                                           for p in flavor.projects.all()]})

    def access_list(self, request, pk):
        if not is_cloud_admin(user=self.user):
            raise PermissionDenied("Policy does not allow this operation to be performed.")
        flavor = self._admin_flavor(pk)
        if flavor.is_public:
            raise NotFound("Access list not available for public flavors.")
        return self._access_body(flavor)

    def flavor_action(self, request, pk):
        flavor = self._admin_flavor(pk)
        data = self.request.data
        if not isinstance(data, dict) or len(data) != 1:
            raise ValidationError("The action body must be a JSON object with exactly one action.")
        (name, args), = data.items()
        if name not in ("addTenantAccess", "removeTenantAccess") or not isinstance(args, dict):
            raise ValidationError(f"There is no such action: {name}")
        project = filter_pk(Project.objects.all(), str(args.get("tenant", ""))).first()
        if project is None:
            raise ValidationError(f"Project {args.get('tenant')} could not be found.")
        if name == "addTenantAccess":
            # 2.7: access to a public flavor is a conflict (before, it was recorded to no effect)
            services.flavor_access_add(flavor=flavor, project=project, refuse_public=supports(request, "2.7"))
        else:
            services.flavor_access_remove(flavor=flavor, project=project)
        return self._access_body(flavor)

    def list(self, request):
        return Response({"flavors": [s.flavor_summary(f) for f in self._flavors()]})

    def list_detail(self, request):
        return Response({"flavors": [s.flavor_detail(f) for f in self._flavors()]})

    def retrieve(self, request, pk):
        return Response({"flavor": s.flavor_detail(flavor_get(user=self.user, name_or_id=pk, project=self.project))})

    def _flavors(self):
        flavors = flavor_list(user=self.user, project=self.project)
        # Nova: a non-admin always sees the public flavors and the private ones shared with the
        # project; an admin sees public ones (default), private ones (false) or all (none).
        raw = self.request.query_params.get("is_public", "true").lower()
        if is_cloud_admin(user=self.user) and raw not in ("none", "all"):
            flavors = flavors.filter(is_public=query_flag({"is_public": raw}, "is_public"))
        params = self.request.query_params
        for param, lookup in (("minRam", "ram__gte"), ("minDisk", "disk__gte")):
            if params.get(param):
                try:
                    flavors = flavors.filter(**{lookup: int(params[param])})
                except ValueError as exc:
                    raise ValidationError(f"Invalid {param}.") from exc
        if name := self.request.query_params.get("name"):
            flavors = flavors.filter(name=name)
        return flavors


# Nova's tag filters of server lists (2.26): comma-separated tags.
TAG_FILTERS = {"tags": "tags", "tags-any": "tags_any", "not-tags": "not_tags", "not-tags-any": "not_tags_any"}


class ServerViewSet(ComputeViewSet):
    action_versions = {
        "remote_console_create": ("2.6", None),
        **{name: ("2.26", None) for name in ("tags_list", "tags_replace", "tags_clear", "tag_show", "tag_add",
                                             "tag_delete")},
    }

    def _page(self, request) -> tuple[list[Instance], dict]:
        """One page of the servers the query asks for (``instance_page``: Nova's filters, sort keys
        and keyset pagination), and the next page's link when the page is full."""
        params = request.query_params
        changes_since = None
        if params.get("changes-since"):
            changes_since = parse_datetime(params["changes-since"])
            if changes_since is None:
                raise ValidationError(f"Invalid changes-since value: {params['changes-since']}")
        limit = page_limit(params)
        # Before 2.5 Nova silently dropped a non-admin's ip6 filter (an admin's always applies).
        ip6_allowed = supports(request, "2.5") or is_cloud_admin(user=self.user)
        with_tags = supports(request, "2.26")  # the tag filters, and tags in the bodies
        tag_filters = {argument: params[name].split(",") for name, argument in TAG_FILTERS.items()
                       if with_tags and params.get(name)}
        page = instance_page(
            user=self.user,
            project=self.project,
            limit=limit,
            marker=params.get("marker"),
            sort_keys=[key.strip() for key in params.getlist("sort_key")],
            sort_dirs=[direction.strip() for direction in params.getlist("sort_dir")],
            status=params.get("status"),
            name=params.get("name"),
            all_projects=bool(query_flag(params, "all_tenants")),
            changes_since=changes_since,
            project_id=params.get("project_id") or params.get("tenant_id"),
            reservation_id=params.get("reservation_id"),
            ip=params.get("ip"),
            ip6=params.get("ip6") if ip6_allowed else None,
            image=params.get("image"),
            flavor=params.get("flavor"),
            admin_filters={key: params[key] for key in ADMIN_SERVER_FILTERS if key in params},
            # Nova's bool_from_string: any other value is false.
            deleted=params["deleted"].strip().lower() in BOOL_TRUE_STRINGS if "deleted" in params else None,
            with_tags=with_tags,
            **tag_filters,
        )
        links = {}
        if limit and len(page) == limit:
            query = params.copy()  # keeps every sort_key/sort_dir pair
            query["marker"], query["limit"] = str(page[-1].pk), str(limit)
            links["servers_links"] = [link("next", request.build_absolute_uri(request.path) + "?" + query.urlencode())]
        return page, links

    def _get(self, pk, *, include_deleted: bool = False):
        return instance_get(user=self.user, project=self.project, instance_id=pk, include_deleted=include_deleted)

    def list(self, request):
        page, links = self._page(request)
        return Response({"servers": [s.server_summary(i) for i in page], **links})

    def list_detail(self, request):
        page, links = self._page(request)
        addresses = server_addresses(device_ids=[str(i.pk) for i in page])
        groups = server_security_groups(device_ids=[str(i.pk) for i in page])
        volumes = servers_volumes(instance_ids=[i.pk for i in page])
        for instance in page:
            instance.network_addresses = addresses[str(instance.pk)]
            instance.network_security_groups = groups[str(instance.pk)]
            instance.attached_volumes = volumes[str(instance.pk)]
        admin = is_cloud_admin(user=self.user)
        return Response({"servers": [s.server_detail(i, is_admin=admin, version=request.api_version) for i in page],
                         **links})

    def retrieve(self, request, pk):
        instance = self._get(pk)
        return Response({"server": s.server_detail(instance, is_admin=is_cloud_admin(user=self.user),
                                                   version=request.api_version)})

    def _description(self, data: dict, *, default=services.UNSET):
        """The body's ``description`` (2.19; None clears it), ``default`` if absent; 400 before 2.19."""
        if "description" not in data:
            return default
        if not supports(self.request, "2.19"):
            raise ValidationError("Additional properties are not allowed ('description' was unexpected).")
        return data["description"]

    def _hinted_group(self, hints) -> ServerGroup | None:
        """The server group of the scheduler hints, which Nova's schema wants as a group's UUID."""
        if not isinstance(hints, dict):
            raise ValidationError("Invalid input for field/attribute os:scheduler_hints: it must be an object.")
        if "group" not in hints:
            return None
        group_id = hints["group"]
        try:
            uuid.UUID(group_id)
        except (TypeError, ValueError, AttributeError):
            raise ValidationError(f"Invalid input for field/attribute group. Value: {group_id}. "
                                  f"'{group_id}' is not a 'uuid'") from None
        return server_group_get(user=self.user, project=self.project, group_id=group_id)

    def create(self, request):
        body = self.body("server")
        parsed = s.ServerCreateSerializer(data=body)
        parsed.is_valid(raise_exception=True)
        data = parsed.validated_data
        # Before 2.19 Nova set the description to the name; from 2.19 it is null unless given.
        description = self._description(body, default=None if supports(request, "2.19") else data["name"])
        hints = request.data.get("os:scheduler_hints") or request.data.get("OS-SCH-HNT:scheduler_hints") or {}
        group = self._hinted_group(hints)
        block_devices = None
        if data.get("block_device_mapping_v2") is not None:
            block_devices = resolve_block_devices(user=self.user, project=self.project,
                                                  block_devices=block_device_mapping_v2(data["block_device_mapping_v2"]),
                                                  count=data.get("max_count") or data.get("min_count") or 1)
        instances = services.instances_create(
            min_count=data.get("min_count") or 1,
            max_count=data.get("max_count") or data.get("min_count") or 1,
            user=self.user,
            project=self.project,
            name=data["name"],
            flavor=flavor_get(user=self.user, name_or_id=data["flavorRef"], project=self.project),
            image=image_get(user=self.user, project=self.project, name_or_id=data["imageRef"]) if data["imageRef"]
            else None,
            block_devices=block_devices,
            request_id=self.request_id,
            key_name=data.get("key_name"),
            user_data=data.get("user_data") or "",
            metadata=data.get("metadata") or {},
            availability_zone=data.get("availability_zone") or None,
            server_group=group,
            networks=data.get("networks"),
            security_groups=data.get("security_groups"),
            config_drive=data.get("config_drive", False),
            description=description,
        )
        if data.get("return_reservation_id"):
            return Response({"reservation_id": instances[0].reservation_id}, status=status.HTTP_202_ACCEPTED)
        body = {**{k: v for k, v in s.server_summary(instances[0]).items() if k != "name"},
                "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}
        return Response({"server": body}, status=status.HTTP_202_ACCEPTED)

    def update(self, request, pk):
        data = self.body("server")
        only_keys(data, {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig", "description"}, "server")
        instance = services.instance_update(instance=self._get(pk), user=self.user, name=data.get("name"),
                                            description=self._description(data))
        return Response({"server": s.server_basic(self._get(str(instance.pk)), version=request.api_version)})

    # -- metadata --------------------------------------------------------------------------------

    def metadata_list(self, request, pk):
        return Response({"metadata": dict(self._get(pk).metadata or {})})

    def _metadata_body(self, key="metadata") -> dict:
        data = self.request.data
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ValidationError(f"The request body must be a JSON object with a '{key}' object.")
        return data[key]

    def metadata_update(self, request, pk):  # POST: merge
        meta = services.instance_metadata_set(instance=self._get(pk), user=self.user, metadata=self._metadata_body())
        return Response({"metadata": meta})

    def metadata_replace(self, request, pk):  # PUT: replace all
        meta = services.instance_metadata_set(instance=self._get(pk), user=self.user, metadata=self._metadata_body(),
                                              replace=True)
        return Response({"metadata": meta})

    def metadata_show(self, request, pk, key):
        meta = self._get(pk).metadata or {}
        if key not in meta:
            raise NotFound(f"Metadata item was not found: {key}")
        return Response({"meta": {key: meta[key]}})

    def metadata_set_item(self, request, pk, key):
        item = self._metadata_body("meta")
        if list(item) != [key]:
            raise ValidationError("Request body and URI mismatch.")
        services.instance_metadata_set(instance=self._get(pk), user=self.user, metadata=item)
        return Response({"meta": item})

    def metadata_delete_item(self, request, pk, key):
        services.instance_metadata_set(instance=self._get(pk), user=self.user, metadata={}, delete_key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # -- tags (2.26) ------------------------------------------------------------------------------

    def tags_list(self, request, pk):
        return Response({"tags": instance_tags(instance=self._get(pk))})

    def tags_replace(self, request, pk):
        data = request.data
        if not isinstance(data, dict) or "tags" not in data:
            raise ValidationError("Invalid input for field/attribute tags. 'tags' is a required property.")
        only_keys(data, {"tags"}, "tags")
        return Response({"tags": services.instance_tags_replace(instance=self._get(pk), tags=data["tags"])})

    def tags_clear(self, request, pk):
        services.instance_tags_clear(instance=self._get(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def tag_show(self, request, pk, tag):
        if tag not in instance_tags(instance=self._get(pk)):
            raise NotFound(f"Server {pk} has no tag '{tag}'")
        return Response(status=status.HTTP_204_NO_CONTENT)

    def tag_add(self, request, pk, tag):
        instance = self._get(pk)
        if not services.instance_tag_add(instance=instance, tag=tag):
            return Response(status=status.HTTP_204_NO_CONTENT)
        location = public_url(f"compute/v2.1/servers/{instance.pk}/tags/{quote(tag, safe='')}")
        return Response(status=status.HTTP_201_CREATED, headers={"Location": location})

    def tag_delete(self, request, pk, tag):
        services.instance_tag_delete(instance=self._get(pk), tag=tag)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def diagnostics(self, request, pk):
        """``GET /servers/{id}/diagnostics`` (admins): the running domain's counters."""
        return Response(instance_diagnostics(user=self.user, instance=self._get(pk)))

    # -- instance actions (from 2.21 of deleted servers too: their records are kept) -------------

    def actions_list(self, request, pk):
        instance = self._get(pk, include_deleted=supports(request, "2.21"))
        return Response({"instanceActions": [s.instance_action_body(a) for a in instance_actions(instance=instance)]})

    def actions_show(self, request, pk, request_id):
        instance = self._get(pk, include_deleted=supports(request, "2.21"))
        action = instance_actions(instance=instance).filter(request_id=request_id).first()
        if action is None:
            raise NotFound(f"Action for request_id {request_id} on instance {pk} not found.")
        return Response({"instanceAction": s.instance_action_body(action, events=True)})

    # -- security groups (os-security-groups) ----------------------------------------------------

    def security_groups_list(self, request, pk):
        """The groups of the server's ports, each once, sorted by project and name (Nova)."""
        instance = self._get(pk)
        groups = [s.security_group_body(group) for group in server_security_group_details(device_id=str(instance.id))]
        return Response({"security_groups": sorted(groups, key=lambda g: (g["tenant_id"], g["name"]))})

    # -- network interfaces (os-interface) -------------------------------------------------------

    def interfaces_list(self, request, pk):
        instance = self._get(pk)
        ports = server_ports(device_ids=[str(instance.pk)])[str(instance.pk)]
        return Response({"interfaceAttachments": [s.interface_body(port) for port in ports]})

    def interface_show(self, request, pk, port_id):
        instance = self._get(pk)
        return Response({"interfaceAttachment": s.interface_body(server_port_get(device_id=str(instance.pk),
                                                                                 port_id=port_id))})

    def interface_attach(self, request, pk):
        data = self.body("interfaceAttachment")
        only_keys(data, {"net_id", "port_id", "fixed_ips", "tag"}, "interfaceAttachment")
        fixed_ips = data.get("fixed_ips") or []
        if not isinstance(fixed_ips, list) or len(fixed_ips) > 1 or not all(
                isinstance(f, dict) and isinstance(f.get("ip_address"), str) for f in fixed_ips):
            raise ValidationError("fixed_ips must be a list of at most one {ip_address}.")
        instance = self._get(pk)
        port = services.instance_interface_attach(
            instance=instance, user=self.user, network_id=data.get("net_id"), port_id=data.get("port_id"),
            fixed_ip=fixed_ips[0]["ip_address"] if fixed_ips else None, request_id=self.request_id)
        return Response({"interfaceAttachment": s.interface_body(server_port_get(device_id=str(instance.pk),
                                                                                 port_id=port.pk))})

    def interface_detach(self, request, pk, port_id):
        instance = self._get(pk)
        services.instance_interface_detach(instance=instance, user=self.user, request_id=self.request_id,
                                           port=server_port_get(device_id=str(instance.pk), port_id=port_id))
        return Response(status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, pk):
        services.instance_delete(instance=self._get(pk), user=self.user, request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def server_action(self, request, pk):
        body = request.data
        if not isinstance(body, dict) or len(body) != 1:
            raise ValidationError("The action body must be a JSON object with exactly one action.")
        (name, args), = body.items()
        handler = self.ACTIONS.get(name)
        if handler is None:
            raise ValidationError(f"There is no such action: {name}")
        span = self.ACTION_VERSIONS.get(name)
        if span is not None and not supports(request, *span):
            raise NotFound("The resource could not be found.")  # the action does not exist at this version
        return handler(self, self._get(pk), args)

    def _console_output(self, instance, args):
        if isinstance(args, dict):
            only_keys(args, {"length"}, "os-getConsoleOutput")
        parsed = s.ConsoleOutputSerializer(data=args or {})
        parsed.is_valid(raise_exception=True)
        length = parsed.validated_data.get("length")
        output = instance_console_log(instance=instance, length=None if length in (None, -1) else length)
        return Response({"output": output})

    def _accepted(self):
        return Response(status=status.HTTP_202_ACCEPTED)

    def _simple(service):
        def handler(self, instance, args):
            service(instance=instance, user=self.user, request_id=self.request_id)
            return self._accepted()
        return handler

    def _reboot(self, instance, args):
        kind = (args or {}).get("type") if isinstance(args, dict) else None
        if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
            raise ValidationError("Invalid input for field/attribute type: reboot type must be SOFT or HARD.")
        services.instance_reboot(instance=instance, user=self.user, hard=kind.upper() == "HARD",
                                 request_id=self.request_id)
        return self._accepted()

    def _resize(self, instance, args):
        if not isinstance(args, dict) or not args.get("flavorRef"):
            raise ValidationError("Invalid input for field/attribute resize: 'flavorRef' is a required property.")
        flavor = flavor_get(user=self.user, name_or_id=str(args["flavorRef"]))
        services.instance_resize(instance=instance, flavor=flavor, user=self.user, request_id=self.request_id)
        return self._accepted()

    def _confirm_resize(self, instance, args):
        services.instance_resize_confirm(instance=instance, user=self.user, request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _rebuild(self, instance, args):
        if not isinstance(args, dict) or not args.get("imageRef"):
            raise ValidationError("Invalid input for field/attribute rebuild: 'imageRef' is a required property.")
        image = image_get(user=self.user, project=self.project, name_or_id=str(args["imageRef"]))
        instance = services.instance_rebuild(instance=instance, image=image, user=self.user, name=args.get("name"),
                                             description=self._description(args), request_id=self.request_id)
        instance = self._get(str(instance.id))
        return Response({"server": s.server_basic(instance, version=self.request.api_version)},
                        status=status.HTTP_202_ACCEPTED)

    def _create_image(self, instance, args):
        if not isinstance(args, dict) or not isinstance(args.get("name"), str):
            raise ValidationError("Invalid input for field/attribute createImage: 'name' is a required property.")
        image = services.instance_create_image(instance=instance, user=self.user, name=args["name"],
                                               metadata=args.get("metadata"), request_id=self.request_id)
        location = public_url(f"image/v2/images/{image.pk}")
        if self.request.api_version >= Version(2, 45):
            return Response({"image_id": str(image.pk)}, status=status.HTTP_202_ACCEPTED, headers={"Location": location})
        return Response(status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    def _create_backup(self, instance, args):
        if not isinstance(args, dict):
            raise ValidationError("Invalid input for field/attribute createBackup: it must be an object.")
        only_keys(args, {"name", "backup_type", "rotation", "metadata"}, "createBackup")
        for key in ("name", "backup_type", "rotation"):
            if key not in args:
                raise ValidationError(
                    f"Invalid input for field/attribute createBackup: '{key}' is a required property.")
        if not isinstance(args["name"], str):
            raise ValidationError("Invalid input for field/attribute name: it must be a string.")
        rotation = args["rotation"]
        # Nova's non_negative_integer: an integer, or a string of digits
        if isinstance(rotation, str) and rotation.isascii() and rotation.isdigit():
            rotation = int(rotation)
        image = services.instance_create_backup(instance=instance, user=self.user, name=args["name"],
                                                backup_type=args["backup_type"], rotation=rotation,
                                                metadata=args.get("metadata"), request_id=self.request_id)
        if self.request.api_version >= Version(2, 45):
            return Response({"image_id": str(image.pk)}, status=status.HTTP_202_ACCEPTED)
        # Before 2.45 the image is named by the Location header, and only if it is kept (rotation > 0).
        headers = {"Location": public_url(f"image/v2/images/{image.pk}")} if rotation else {}
        return Response(status=status.HTTP_202_ACCEPTED, headers=headers)

    def _old_console(protocol: str, types: tuple[str, ...]):
        """The console actions of 2.1 to 2.5 (``{"os-getVNCConsole": {"type": "novnc"}}``)."""
        def handler(self, instance, args):
            kind = _console_field(args, "type", types, "console")
            url = services.instance_console_url(instance=instance, user=self.user, protocol=protocol,
                                                console_type=kind)
            return Response({"console": {"type": kind, "url": url}})
        return handler

    def remote_console_create(self, request, pk):
        """2.6: ``POST /servers/{id}/remote-consoles``, which replaced the console actions."""
        console = self.body("remote_console")
        protocols, types = REMOTE_CONSOLE_PROTOCOLS, REMOTE_CONSOLE_TYPES
        if supports(request, "2.8"):
            protocols, types = protocols + ("mks",), types + ("webmks",)
        protocol = _console_field(console, "protocol", protocols, "remote_console", others=("type",))
        kind = _console_field(console, "type", types, "remote_console", others=("protocol",))
        url = services.instance_console_url(instance=self._get(pk), user=self.user, protocol=protocol,
                                            console_type=kind)
        return Response({"remote_console": {"protocol": protocol, "type": kind, "url": url}})

    def _security_group(service, action: str):
        """addSecurityGroup / removeSecurityGroup: ``{"name": <group name or id>}``."""
        def handler(self, instance, args):
            if not isinstance(args, dict):
                raise ValidationError("Missing parameter dict")
            only_keys(args, {"name"}, action)
            if "name" not in args:
                raise ValidationError("Security group not specified")
            name = args["name"]
            if not isinstance(name, str) or not name.strip():
                raise ValidationError("Security group name cannot be empty")
            service(instance=instance, user=self.user, name=name)
            return self._accepted()
        return handler

    def _add_fixed_ip(self, instance, args):
        # Nova's schema: {"networkId": a string or an integer}, nothing else.
        network_id = only_field(args, "addFixedIp", "networkId")
        if isinstance(network_id, bool) or not isinstance(network_id, str | int) or network_id == "":
            raise ValidationError("Invalid input for field/attribute networkId: it must be a string or an integer.")
        services.instance_fixed_ip_add(instance=instance, user=self.user, network_id=network_id,
                                       request_id=self.request_id)
        return self._accepted()

    def _remove_fixed_ip(self, instance, args):
        # Nova's schema: {"address": an IP address}, nothing else.
        address = only_field(args, "removeFixedIp", "address")
        try:
            address = str(ipaddress.ip_address(address if isinstance(address, str) else ""))
        except ValueError as exc:
            raise ValidationError(f"Invalid input for field/attribute address. Value: {address}. "
                                  "It is not an IP address.") from exc
        services.instance_fixed_ip_remove(instance=instance, user=self.user, address=address,
                                          request_id=self.request_id)
        return self._accepted()

    def _reset_state(self, instance, args):
        state = only_field(args, "os-resetState", "state")
        services.instance_reset_state(instance=instance, user=self.user, state=state,
                                      request_id=self.request_id)
        return self._accepted()

    def _force_delete(self, instance, args):
        # Deletes are never deferred here, so forcing one is a delete (Nova's forceDelete: any state).
        services.instance_delete(instance=instance, user=self.user, request_id=self.request_id)
        return self._accepted()

    def _change_password(self, instance, args):
        password = only_field(args, "changePassword", "adminPass")
        services.instance_change_password(instance=instance, user=self.user, password=password,
                                          request_id=self.request_id)
        return self._accepted()

    def _trigger_crash_dump(self, instance, args):
        if args is not None:
            raise ValidationError("Invalid input for field/attribute trigger_crash_dump: it must be null.")
        services.instance_trigger_crash_dump(instance=instance, user=self.user, request_id=self.request_id)
        return self._accepted()

    def _rescue(self, instance, args):
        # Nova's schema: null, or an object of string adminPass (not set in the guest here) and image id.
        if args is not None and not isinstance(args, dict):
            raise ValidationError("Invalid input for field/attribute rescue: it must be an object or null.")
        args = args or {}
        only_keys(args, {"adminPass", "rescue_image_ref"}, "rescue")
        for key in ("adminPass", "rescue_image_ref"):
            if key in args and not isinstance(args[key], str):
                raise ValidationError(f"Invalid input for field/attribute {key}: it must be a string.")
        image = None
        if args.get("rescue_image_ref"):
            image = image_get(user=self.user, project=self.project, name_or_id=args["rescue_image_ref"])
        services.instance_rescue(instance=instance, user=self.user, image=image, request_id=self.request_id)
        return Response({})  # Nova returns adminPass only when it sets guest passwords; cloudmgr does not

    ACTIONS = {
        "os-getConsoleOutput": _console_output,
        "rescue": _rescue,
        "unrescue": _simple(services.instance_unrescue),
        "os-getVNCConsole": _old_console("vnc", ("novnc", "xvpvnc")),
        "os-getSPICEConsole": _old_console("spice", ("spice-html5",)),
        "os-getSerialConsole": _old_console("serial", ("serial",)),
        "os-getRDPConsole": _old_console("rdp", ("rdp-html5",)),
        "createImage": _create_image,
        "createBackup": _create_backup,
        "os-start": _simple(services.instance_start),
        "os-stop": _simple(services.instance_stop),
        "reboot": _reboot,
        "pause": _simple(services.instance_pause),
        "unpause": _simple(services.instance_unpause),
        "suspend": _simple(services.instance_suspend),
        "resume": _simple(services.instance_resume),
        "lock": _simple(services.instance_lock),
        "unlock": _simple(services.instance_unlock),
        "resize": _resize,
        "confirmResize": _confirm_resize,
        "revertResize": _simple(services.instance_resize_revert),
        "rebuild": _rebuild,
        "shelve": _simple(services.instance_shelve),  # its body is not read up to 2.76 (Nova)
        "unshelve": _simple(services.instance_unshelve),
        "trigger_crash_dump": _trigger_crash_dump,
        "forceDelete": _force_delete,
        "restore": _simple(services.instance_restore),
        "changePassword": _change_password,
        "os-resetState": _reset_state,
        "addFixedIp": _add_fixed_ip,
        "removeFixedIp": _remove_fixed_ip,
        "addSecurityGroup": _security_group(services.instance_security_group_add, "addSecurityGroup"),
        "removeSecurityGroup": _security_group(services.instance_security_group_remove, "removeSecurityGroup"),
    }
    # Actions that exist only in a span of microversions; outside it they are 404, as in Nova.
    ACTION_VERSIONS = {
        **{name: ("2.1", "2.5") for name in
           ("os-getVNCConsole", "os-getSPICEConsole", "os-getSerialConsole", "os-getRDPConsole")},
        "trigger_crash_dump": ("2.17", None),
    }


class KeypairViewSet(ComputeViewSet):
    """Per user: the token's user; from 2.10 an admin may name another with ``user_id``."""

    def _owner(self, user_id: str | None):
        if user_id and user_id not in (self.user.pk.hex, str(self.user.pk)):
            if not is_cloud_admin(user=self.user):
                raise PermissionDenied("Policy does not allow this operation to be performed.")
            from apps.tenants.models import User

            owner = filter_pk(User.objects.all(), user_id).first()
            if owner is None:
                raise NotFound(f"User {user_id} could not be found.")
            return owner
        return self.user

    def _query_owner(self):
        # Before 2.10 Nova ignores the user_id query parameter (the token's user it is).
        return self._owner(self.request.query_params.get("user_id") if supports(self.request, "2.10") else None)

    def list(self, request):
        keypairs = keypair_list(user=self._query_owner())
        return Response({"keypairs": [{"keypair": s.keypair_body(k, version=request.api_version)} for k in keypairs]})

    def create(self, request):
        data = self.body("keypair")
        allowed = {"name", "public_key"} | ({"type"} if supports(request, "2.2") else set()) | (
            {"user_id"} if supports(request, "2.10") else set())
        only_keys(data, allowed, "keypair")
        parsed = s.KeypairCreateSerializer(data=data)
        parsed.is_valid(raise_exception=True)
        d = parsed.validated_data
        owner = self.user
        if data.get("user_id") is not None:
            if not isinstance(data["user_id"], str):
                raise ValidationError("Invalid input for field/attribute user_id: it must be a string.")
            try:
                owner = self._owner(data["user_id"])
            except NotFound as exc:
                raise ValidationError(exc.message) from exc  # a body field, not the URL's resource
        keypair, private_key = services.keypair_create(user=owner, name=d["name"], public_key=d.get("public_key"),
                                                       key_type=d.get("type") or "ssh")
        body = s.keypair_body(keypair, version=request.api_version, private_key=private_key, created=True)
        created = status.HTTP_201_CREATED if supports(request, "2.2") else status.HTTP_200_OK
        return Response({"keypair": body}, status=created)

    def retrieve(self, request, pk):
        keypair = keypair_get(user=self._query_owner(), name=pk)
        return Response({"keypair": s.keypair_body(keypair, version=request.api_version, detail=True)})

    def destroy(self, request, pk):
        services.keypair_delete(keypair=keypair_get(user=self._query_owner(), name=pk))
        return Response(status=status.HTTP_204_NO_CONTENT if supports(request, "2.2") else status.HTTP_202_ACCEPTED)


# Nova's quota-set keys at 2.1 with fixed values; key pairs, server groups and their members are
# the services' limits (settings: CLOUDMGR_COMPUTE_LIMITS).
_FIXED_QUOTAS = {
    "metadata_items": services.MAX_METADATA_ITEMS, "injected_files": 5, "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255, "fixed_ips": -1, "security_group_rules": -1,
}
_NOVA_QUOTAS = ("instances", "cores", "ram", "floating_ips", "security_groups")
_LIMITS = ("key_pairs", "server_groups", "server_group_members")


def _quota_set(project, *, detail: bool = False, defaults: bool = False) -> dict:
    from django.conf import settings

    if defaults:
        rows = {r: (settings.CLOUDMGR_DEFAULT_QUOTAS.get(r, -1), 0) for r in _NOVA_QUOTAS}
    else:
        rows = {q.resource: (q.limit, q.in_use) for q in Quota.objects.filter(project=project, resource__in=_NOVA_QUOTAS)}
    body = {"id": project.pk.hex}
    for resource in _NOVA_QUOTAS:
        limit, in_use = rows.get(resource, (-1, 0))
        body[resource] = {"limit": limit, "in_use": in_use, "reserved": 0} if detail else limit
    for resource, limit in {**_FIXED_QUOTAS, **{name: services.compute_limit(name) for name in _LIMITS}}.items():
        body[resource] = {"limit": limit, "in_use": 0, "reserved": 0} if detail else limit
    return body


class QuotaSetViewSet(ComputeViewSet):
    admin_only = {"update", "destroy"}

    def _target(self, pk) -> Project:
        project = filter_pk(Project.objects.all(), pk).first()
        if project is None:
            raise NotFound(f"Project {pk} could not be found.")
        if project.pk != self.project.pk and not is_cloud_admin(user=self.user):
            raise PermissionDenied("Policy does not allow this operation to be performed.")
        return project

    def retrieve(self, request, pk):
        return Response({"quota_set": _quota_set(self._target(pk))})

    def quota_detail(self, request, pk):
        return Response({"quota_set": _quota_set(self._target(pk), detail=True)})

    def quota_defaults(self, request, pk):
        return Response({"quota_set": _quota_set(self._target(pk), defaults=True)})

    def update(self, request, pk):
        project = self._target(pk)
        data = self.body("quota_set")
        for key, value in data.items():
            if key in ("force",):
                continue
            if key not in _NOVA_QUOTAS and key not in _FIXED_QUOTAS:
                raise ValidationError(f"Bad key(s) {key} in quota_set")
            try:
                limit = int(value)
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"Invalid value for {key}.") from exc
            if key in _NOVA_QUOTAS:
                quota_set(project=project, resource=key, limit=limit)
        body = _quota_set(project)
        body.pop("id")
        return Response({"quota_set": body})

    def destroy(self, request, pk):
        from django.conf import settings

        project = self._target(pk)
        for resource in _NOVA_QUOTAS:
            quota_set(project=project, resource=resource, limit=settings.CLOUDMGR_DEFAULT_QUOTAS.get(resource, -1))
        return Response(status=status.HTTP_202_ACCEPTED)


class LimitsView(ComputeViewSet):
    def retrieve(self, request):
        quotas = _quota_set(self.project, detail=True)
        groups = ServerGroup.objects.filter(project=self.project).count()
        absolute = {
            "maxServerMeta": quotas["metadata_items"]["limit"], "maxPersonality": quotas["injected_files"]["limit"],
            "maxPersonalitySize": quotas["injected_file_content_bytes"]["limit"], "maxImageMeta": 128,
            "maxTotalKeypairs": quotas["key_pairs"]["limit"], "maxSecurityGroups": quotas["security_groups"]["limit"],
            "maxSecurityGroupRules": quotas["security_group_rules"]["limit"],
            "maxServerGroups": quotas["server_groups"]["limit"],
            "maxServerGroupMembers": quotas["server_group_members"]["limit"],
            "maxTotalCores": quotas["cores"]["limit"], "maxTotalInstances": quotas["instances"]["limit"],
            "maxTotalRAMSize": quotas["ram"]["limit"], "maxTotalFloatingIps": quotas["floating_ips"]["limit"],
            "totalCoresUsed": quotas["cores"]["in_use"], "totalInstancesUsed": quotas["instances"]["in_use"],
            "totalRAMUsed": quotas["ram"]["in_use"], "totalFloatingIpsUsed": 0, "totalSecurityGroupsUsed": 0,
            "totalServerGroupsUsed": groups,
        }
        return Response({"limits": {"rate": [], "absolute": absolute}})


# Nova's start and end of a usage report (simple_tenant_usage.py), read as UTC.
USAGE_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _usage_time(value: str | None, now: datetime) -> datetime:
    if not value:
        return now
    for fmt in USAGE_TIME_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC)  # none of the formats carries an offset
    raise ValidationError(f"Invalid datetime string: {value!r} is not in the format YYYY-MM-DDTHH:MM:SS[.ffffff].")


class SimpleTenantUsageViewSet(ComputeViewSet):
    """os-simple-tenant-usage: what each project's servers used in a period (hours, and vCPU, RAM
    and disk hours), every project's for admins, a project's own for its token."""

    def _report(self, request, project_id: str | None = None):
        now = timezone.now()
        start = _usage_time(request.query_params.get("start"), now)
        stop = _usage_time(request.query_params.get("end"), now)
        if not start < stop:
            raise ValidationError("Invalid start time. The start time cannot occur after the end time.")
        return usage_report(user=self.user, project=self.project, start=start, stop=min(stop, now),
                            project_id=project_id, limit=MAX_LIMIT)

    def list(self, request):
        # Nova takes only "1"; openstacksdk sends "True" (so `openstack usage list` got no servers).
        detailed = request.query_params.get("detailed", "").strip().lower() in BOOL_TRUE_STRINGS
        return Response({"tenant_usages": [s.project_usage_body(r, detailed=detailed) for r in self._report(request)]})

    def retrieve(self, request, pk):
        reports = self._report(request, project_id=pk)
        return Response({"tenant_usage": s.project_usage_body(reports[0]) if reports else {}})


class AvailabilityZoneViewSet(ComputeViewSet):
    admin_only = {"list_detail"}

    def list(self, request):
        zones = sorted(set(Host.objects.values_list("availability_zone", flat=True))) or ["nova"]
        up = set(Host.objects.filter(state="up", status="enabled").values_list("availability_zone", flat=True))
        return Response({"availabilityZoneInfo": [
            {"zoneName": z, "zoneState": {"available": z in up}, "hosts": None} for z in zones]})

    def list_detail(self, request):
        zones: dict = {}
        for host in host_list():
            zones.setdefault(host.availability_zone, {})[host.hostname] = {"nova-compute": {
                "available": host.state == "up", "active": host.status == "enabled",
                "updated_at": host.last_heartbeat.isoformat() if host.last_heartbeat else None}}
        return Response({"availabilityZoneInfo": [
            {"zoneName": z, "zoneState": {"available": any(v["nova-compute"]["available"] for v in hosts.values())},
             "hosts": hosts} for z, hosts in sorted(zones.items())]})


class HypervisorViewSet(ComputeViewSet):
    admin_only = True
    project_scoped = True

    def _bodies(self, hosts, detail):
        hosts = list(hosts)
        usage = hosts_usage(hosts=hosts)
        running = dict(Instance.objects.filter(host__in=hosts, deleted_at__isnull=True).values("host_id")
                       .annotate(n=Count("pk")).values_list("host_id", "n"))
        return [s.hypervisor_body(h, usage[h.pk], running.get(h.pk, 0), detail=detail, version=self.request.api_version)
                for h in hosts]

    def _hosts(self):
        hosts = host_list()
        if pattern := self.request.query_params.get("hypervisor_hostname_pattern"):
            hosts = hosts.filter(hostname__icontains=pattern)
        return hosts

    def list(self, request):
        return Response({"hypervisors": self._bodies(self._hosts(), False)})

    def list_detail(self, request):
        return Response({"hypervisors": self._bodies(self._hosts(), True)})

    @staticmethod
    def _host(pk: str) -> Host:
        host = filter_pk(host_list(), pk).first() or host_list().filter(hostname=pk).first()
        if host is None:
            raise NotFound(f"Hypervisor {pk} could not be found.")
        return host

    def retrieve(self, request, pk):
        return Response({"hypervisor": self._bodies([self._host(pk)], True)[0]})

    def uptime(self, request, pk):  # 2.1-2.87
        host = self._host(pk)
        return Response({"hypervisor": {**self._bodies([host], False)[0], "uptime": host_uptime(host=host)}})

    def search(self, request, pattern):  # 2.1-2.52: hosts whose name contains the pattern
        return Response({"hypervisors": self._bodies(hosts_matching(pattern=pattern), False)})

    def servers(self, request, pattern):  # 2.1-2.52: those hosts with their servers
        hosts = list(hosts_matching(pattern=pattern))
        servers = hosts_servers(hosts=hosts)
        bodies = self._bodies(hosts, False)
        for host, body in zip(hosts, bodies, strict=True):
            if servers[host.pk]:  # Nova leaves the key out for a host without servers
                body["servers"] = [{"uuid": str(server_id), "name": name} for server_id, name in servers[host.pk]]
        return Response({"hypervisors": bodies})

    def statistics(self, request):
        bodies = self._bodies(host_list(), True)
        keys = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used", "free_ram_mb",
                "free_disk_gb", "current_workload", "running_vms", "disk_available_least")
        stats = {k: sum(b[k] for b in bodies) for k in keys}
        stats["count"] = len(bodies)
        return Response({"hypervisor_statistics": stats})


class MigrationViewSet(ComputeViewSet):
    admin_only = True

    def list(self, request):
        params = request.query_params
        filters = {key: params[key] for key in (*MIGRATION_FILTERS, "host") if key in params}
        migrations = migration_list(user=self.user, filters=filters)
        return Response({"migrations": [s.migration_body(m, version=request.api_version) for m in migrations]})


class HostViewSet(ComputeViewSet):
    """Nova's os-hosts (2.1-2.42): the compute hosts, what they hold, enable and disable."""
    admin_only = True

    def list(self, request):
        hosts = host_list()
        if zone := request.query_params.get("zone"):
            hosts = hosts.filter(availability_zone=zone)
        return Response({"hosts": [{"host_name": h.hostname, "service": "compute", "zone": h.availability_zone}
                                   for h in hosts]})

    def retrieve(self, request, pk):
        host = host_get(hostname=pk)
        return Response({"host": s.host_resources_body(host, host_usage(host=host), host_usage_by_project(host=host))})

    def update(self, request, pk):
        host = host_get(hostname=pk)
        data = request.data
        if not isinstance(data, dict) or not ({"status", "maintenance_mode"} & set(data)):
            raise ValidationError("Invalid input for field/attribute host: 'status' or 'maintenance_mode' is "
                                  "required.")
        only_keys(data, {"status", "maintenance_mode"}, "host")
        for key in ("status", "maintenance_mode"):
            if key in data and data[key] not in ("enable", "disable"):
                raise ValidationError(f"Invalid input for field/attribute {key}. Value: {data[key]}. It must be "
                                      "'enable' or 'disable'.")
        if "maintenance_mode" in data:
            raise NotImplementedHere("Virt driver does not implement host maintenance mode.")
        host = host_enable(host=host) if data["status"] == "enable" else host_disable(host=host)
        return Response({"host": host.hostname, "status": host.status})

    def power_action(self, request, pk, action):
        # GET os-hosts/{host}/startup|shutdown|reboot: Nova's libvirt driver powers no host (501).
        host_get(hostname=pk)
        raise NotImplementedHere("The requested functionality is not supported.")


class AggregateViewSet(ComputeViewSet):
    """Nova's os-aggregates before 2.41: host aggregates; the ``availability_zone`` of one puts
    its hosts in that zone. Answers 200 where Nova does (create, delete and actions included)."""
    admin_only = True

    def list(self, request):
        return Response({"aggregates": [s.aggregate_body(a) for a in aggregate_list()]})

    def retrieve(self, request, pk):
        return Response({"aggregate": s.aggregate_body(aggregate_get(aggregate_id=pk))})

    def create(self, request):
        data = self.body("aggregate")
        only_keys(data, {"name", "availability_zone"}, "aggregate")
        if "name" not in data:
            raise ValidationError("Invalid input for field/attribute aggregate. 'name' is a required property")
        aggregate = aggregate_create(name=data["name"], availability_zone=data.get("availability_zone"))
        return Response({"aggregate": s.aggregate_body(aggregate, members=False)})

    def update(self, request, pk):
        aggregate = aggregate_get(aggregate_id=pk)
        return Response({"aggregate": s.aggregate_body(aggregate_update(aggregate=aggregate,
                                                                        changes=self.body("aggregate")))})

    def destroy(self, request, pk):
        aggregate_delete(aggregate=aggregate_get(aggregate_id=pk))
        return Response(status=status.HTTP_200_OK)

    def action(self, request, pk):
        aggregate = aggregate_get(aggregate_id=pk)
        data = request.data
        if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in self._ACTIONS:
            raise ValidationError("Invalid input for field/attribute action: give one of "
                                  f"{', '.join(self._ACTIONS)}.")
        (name, args), = data.items()
        field = self._ACTIONS[name]
        value = only_field(args, name, field)
        if name == "set_metadata":
            aggregate = aggregate_set_metadata(aggregate=aggregate, metadata=value)
        elif not isinstance(value, str):
            raise ValidationError(f"Invalid input for field/attribute host. Value: {value}. It is not a string.")
        elif name == "add_host":
            aggregate = aggregate_add_host(aggregate=aggregate, hostname=value)
        else:
            aggregate = aggregate_remove_host(aggregate=aggregate, hostname=value)
        return Response({"aggregate": s.aggregate_body(aggregate_get(aggregate_id=aggregate.pk))})

    _ACTIONS = {"add_host": "host", "remove_host": "host", "set_metadata": "metadata"}


class ServiceViewSet(ComputeViewSet):
    admin_only = True
    action_versions = {"force_down": ("2.11", None)}

    def list(self, request):
        hosts = host_list()
        params = request.query_params
        if params.get("host"):
            hosts = hosts.filter(hostname=params["host"])
        if params.get("binary") and params["binary"] != "nova-compute":
            hosts = hosts.none()
        return Response({"services": [s.service_body(h, version=request.api_version) for h in hosts]})

    def _host(self) -> Host:
        data = self.request.data
        if not isinstance(data, dict) or not data.get("host"):
            raise ValidationError("'host' is a required property.")
        if data.get("binary", "nova-compute") != "nova-compute":
            raise NotFound(f"Service {data.get('binary')} on host {data['host']} not found.")
        return host_get(hostname=data["host"])

    def enable(self, request):
        host = host_enable(host=self._host())
        return Response({"service": {"host": host.hostname, "binary": "nova-compute", "status": "enabled"}})

    def disable(self, request):
        host = host_disable(host=self._host(), reason=str(self.request.data.get("disabled_reason") or ""))
        body = {"host": host.hostname, "binary": "nova-compute", "status": "disabled"}
        if self.request.data.get("disabled_reason"):
            body["disabled_reason"] = host.disabled_reason
        return Response({"service": body})

    def update(self, request, pk):  # 2.53 style, by id: {"status": "enabled|disabled", "disabled_reason"}
        host = filter_pk(host_list(), pk).first()
        if host is None:
            raise NotFound(f"Service {pk} could not be found.")
        data = self.request.data if isinstance(self.request.data, dict) else {}
        if data.get("status") == "disabled":
            host = host_disable(host=host, reason=str(data.get("disabled_reason") or ""))
        elif data.get("status") == "enabled":
            host = host_enable(host=host)
        else:
            raise ValidationError("'status' must be enabled or disabled.")
        return Response({"service": s.service_body(host, version=request.api_version)})

    def force_down(self, request):  # 2.11: {"host", "binary", "forced_down"} (Nova's update schema)
        data = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(data) - {"host", "binary", "forced_down", "disabled_reason"})
        if unknown:
            raise ValidationError(f"Additional properties are not allowed ({', '.join(unknown)}).")
        if "binary" not in data:
            raise ValidationError("'binary' is a required property.")
        if "forced_down" not in data:
            raise ValidationError("Missing forced_down field")
        forced_down = s.nova_boolean(data["forced_down"])
        if forced_down is None:
            raise ValidationError(f"Invalid input for field/attribute forced_down. "
                                  f"{data['forced_down']!r} {s.NOT_BOOLEAN}")
        host = host_force_down(host=self._host(), forced_down=forced_down)
        return Response({"service": {"host": host.hostname, "binary": "nova-compute",
                                     "forced_down": host.forced_down}})


class ServerGroupViewSet(ComputeViewSet):
    def list(self, request):
        groups = server_group_list(user=self.user, project=self.project,
                                   all_projects=bool(query_flag(request.query_params, "all_projects")))
        return Response({"server_groups": [s.server_group_body(g, version=request.api_version) for g in groups]})

    def create(self, request):
        data = self.body("server_group")
        policies = data.get("policies")
        policy = data.get("policy")
        if policy is None and isinstance(policies, list) and len(policies) == 1:
            policy = policies[0]
        if not isinstance(policy, str):
            raise ValidationError("A server group needs exactly one policy ('policies': [policy]).")
        if policy.startswith("soft-") and not supports(request, "2.15"):
            raise ValidationError(f"Invalid input for field/attribute 0. Value: {policy}. "
                                  f"{policy!r} is not one of ['anti-affinity', 'affinity'] (soft policies: 2.15)")
        group = services.server_group_create(user=self.user, project=self.project, name=str(data.get("name") or ""),
                                             policy=policy, rules=data.get("rules"))
        return Response({"server_group": s.server_group_body(group, version=request.api_version)})

    def retrieve(self, request, pk):
        group = server_group_get(user=self.user, project=self.project, group_id=pk)
        return Response({"server_group": s.server_group_body(group, version=request.api_version)})

    def destroy(self, request, pk):
        services.server_group_delete(group=server_group_get(user=self.user, project=self.project, group_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
