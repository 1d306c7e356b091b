"""Glance v2 paths, mounted at /image/ (no trailing slashes, as Glance's)."""

from django.urls import path, re_path

from apps.images.api import views as v
from cloudmgr.api.errors import ServiceNotFoundView

I = "v2/images/<str:pk>"

images = v.ImageViewSet
data = v.ImageDataViewSet
members = v.MemberViewSet

urlpatterns = [
    path("", v.ImageVersionsView.as_view()),
    path("versions", v.ImageVersionListView.as_view()),
    path("v2", v.ImageVersionsView.as_view()),
    path("v2/", v.ImageVersionsView.as_view()),
    path("v2/schemas/<str:name>", v.SchemaViewSet.as_view({"get": "retrieve"})),
    path("v2/info/import", v.InfoViewSet.as_view({"get": "import_info"})),
    path("v2/images", images.as_view({"get": "list", "post": "create"})),
    path(I, images.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"})),
    path(f"{I}/file", data.as_view({"put": "upload", "get": "download"})),
    path(f"{I}/stage", data.as_view({"put": "stage"})),
    path(f"{I}/import", images.as_view({"post": "import_"})),
    path(f"{I}/actions/deactivate", images.as_view({"post": "deactivate"})),
    path(f"{I}/actions/reactivate", images.as_view({"post": "reactivate"})),
    path(f"{I}/tags/<str:tag>", images.as_view({"put": "tag_add", "delete": "tag_remove"})),
    path(f"{I}/members", members.as_view({"get": "list", "post": "create"})),
    path(f"{I}/members/<str:member_id>", members.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    re_path(r"^.*$", ServiceNotFoundView.as_view(error_style="glance")),
]
