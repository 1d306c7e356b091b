"""Neutron v2.0 paths, mounted at /network/ (no trailing slashes, as Neutron's)."""

from django.urls import path, re_path

from apps.networks.api import views as v
from cloudmgr.api.errors import ServiceNotFoundView

V = "v2.0"


def crud(collection: str, viewset) -> list:
    return [
        path(f"{V}/{collection}", viewset.as_view({"get": "list", "post": "create"})),
        path(f"{V}/{collection}/<str:pk>",
             viewset.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    ]


routers = v.RouterViewSet
quotas = v.QuotaViewSet

urlpatterns = [
    path("", v.VersionsView.as_view()),
    path(V, v.ResourcesView.as_view()),
    path(f"{V}/", v.ResourcesView.as_view()),
    path(f"{V}/extensions", v.ExtensionViewSet.as_view({"get": "list"})),
    path(f"{V}/extensions/<str:alias>", v.ExtensionViewSet.as_view({"get": "retrieve"})),
    *crud("networks", v.NetworkViewSet),
    *crud("subnets", v.SubnetViewSet),
    *crud("ports", v.PortViewSet),
    *crud("routers", routers),
    path(f"{V}/routers/<str:pk>/add_router_interface", routers.as_view({"put": "add_interface"})),
    path(f"{V}/routers/<str:pk>/remove_router_interface", routers.as_view({"put": "remove_interface"})),
    path(f"{V}/routers/<str:pk>/add_extraroutes", routers.as_view({"put": "add_routes"})),
    path(f"{V}/routers/<str:pk>/remove_extraroutes", routers.as_view({"put": "remove_routes"})),
    *crud("floatingips", v.FloatingIPViewSet),
    *crud("security-groups", v.SecurityGroupViewSet),
    path(f"{V}/security-group-rules", v.SecurityGroupRuleViewSet.as_view({"get": "list", "post": "create"})),
    path(f"{V}/security-group-rules/<str:pk>",
         v.SecurityGroupRuleViewSet.as_view({"get": "retrieve", "delete": "destroy"})),
    path(f"{V}/quotas", quotas.as_view({"get": "list"})),
    path(f"{V}/quotas/<str:pk>", quotas.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{V}/quotas/<str:pk>/default", quotas.as_view({"get": "defaults"})),
    path(f"{V}/quotas/<str:pk>/details", quotas.as_view({"get": "details"})),
    path(f"{V}/network-ip-availabilities", v.NetworkIPAvailabilityViewSet.as_view({"get": "list"})),
    path(f"{V}/network-ip-availabilities/<str:pk>", v.NetworkIPAvailabilityViewSet.as_view({"get": "retrieve"})),
    path(f"{V}/auto-allocated-topology/<str:pk>",
         v.AutoAllocatedTopologyViewSet.as_view({"get": "retrieve", "delete": "destroy"})),
    re_path(r"^.*$", ServiceNotFoundView.as_view(error_style="neutron")),
]
