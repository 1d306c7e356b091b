"""`GET /network` without a slash: the catalog's URL of the network service, which clients
discover first (mounted by cloudmgr/urls.py beside apps/networks/api/urls.py)."""

from django.urls import path

from apps.networks.api.views import VersionsView

urlpatterns = [path("", VersionsView.as_view())]
