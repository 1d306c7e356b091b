"""`GET /volume` without a slash: the block storage service's version document (mounted by
cloudmgr/urls.py beside apps/volumes/api/urls.py)."""

from django.urls import path

from apps.volumes.api.views import VersionsView

urlpatterns = [path("", VersionsView.as_view())]
