from django.db.models import Prefetch
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.images.selectors import image_get
from apps.instances import services
from apps.instances.api import serializers as s
from apps.instances.models import InstanceFault
from apps.instances.selectors import flavor_get, flavor_list, instance_console_log, instance_get, instance_list
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.api.microversions import MicroversionMixin, Version
from cloudmgr.api.pagination import paginate, query_flag
from cloudmgr.api.versions import UPDATED, link, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet
from cloudmgr.exceptions import ValidationError

MIN_VERSION = Version(2, 1)
MAX_VERSION = Version(2, 1)  # raised feature by feature: the SDK uses the maximum advertised


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


class ComputeViewSet(MicroversionMixin, ProjectScopedViewSet):
    error_style = "nova"
    service_type = "compute"
    legacy_header = "X-OpenStack-Nova-API-Version"
    min_version = MIN_VERSION
    max_version = MAX_VERSION


class FlavorViewSet(ComputeViewSet):
    def list(self, request):
        return Response({"flavors": [s.flavor_summary(f) for f in self._flavors()]})

    def list_detail(self, request):
        return Response({"flavors": [s.flavor_detail(f) for f in self._flavors()]})

    def retrieve(self, request, pk):
        return Response({"flavor": s.flavor_detail(flavor_get(user=self.user, name_or_id=pk))})

    def _flavors(self):
        flavors = flavor_list(user=self.user)
        is_public = query_flag(self.request.query_params, "is_public")
        if is_public is not None:
            flavors = flavors.filter(is_public=is_public)
        if name := self.request.query_params.get("name"):
            flavors = flavors.filter(name=name)
        return flavors


class ServerViewSet(ComputeViewSet):
    def _instances(self):
        params = self.request.query_params
        return instance_list(
            user=self.user,
            project=self.project,
            status=params.get("status"),
            name=params.get("name"),
            all_projects=query_flag(params, "all_tenants"),
        ).prefetch_related(Prefetch("faults", queryset=InstanceFault.objects.order_by("-created_at")))

    def _get(self, pk):
        return instance_get(user=self.user, project=self.project, instance_id=pk)

    def list(self, request):
        page, links = paginate(request, self._instances(), "servers")
        return Response({"servers": [s.server_summary(i) for i in page], **links})

    def list_detail(self, request):
        page, links = paginate(request, self._instances(), "servers")
        admin = is_cloud_admin(user=self.user)
        return Response({"servers": [s.server_detail(i, is_admin=admin) for i in page], **links})

    def retrieve(self, request, pk):
        instance = self._get(pk)
        return Response({"server": s.server_detail(instance, is_admin=is_cloud_admin(user=self.user))})

    def create(self, request):
        parsed = s.ServerCreateSerializer(data=self.body("server"))
        parsed.is_valid(raise_exception=True)
        data = parsed.validated_data
        instance = services.instance_create(
            user=self.user,
            project=self.project,
            name=data["name"],
            flavor=flavor_get(user=self.user, name_or_id=data["flavorRef"]),
            image=image_get(user=self.user, project=self.project, name_or_id=data["imageRef"]),
            request_id=self.request_id,
        )
        body = {**{k: v for k, v in s.server_summary(instance).items() if k != "name"}, "OS-DCF:diskConfig": "MANUAL"}
        return Response({"server": body}, status=status.HTTP_202_ACCEPTED)

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
        return handler(self, self._get(pk), args)

    def _console_output(self, instance, args):
        parsed = s.ConsoleOutputSerializer(data=args or {})
        parsed.is_valid(raise_exception=True)
        length = parsed.validated_data.get("length")
        output = instance_console_log(instance=instance, length=None if length in (None, -1) else length)
        return Response({"output": output})

    ACTIONS = {"os-getConsoleOutput": _console_output}
