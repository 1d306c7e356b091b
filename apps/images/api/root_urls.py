"""`GET /image` without a slash: the catalog's URL of the image service, which clients discover
first (mounted by cloudmgr/urls.py beside apps/images/api/urls.py)."""

from django.urls import path

from apps.images.api.views import ImageVersionsView

urlpatterns = [path("", ImageVersionsView.as_view())]
