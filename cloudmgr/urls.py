from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("identity/", include("apps.tenants.api.urls")),
    path("identity/", include("apps.tenants.urls")),
    path("compute/", include("apps.instances.api.urls")),
    path("image", include("apps.images.api.root_urls")),
    path("image/", include("apps.images.api.urls")),
    path("network", include("apps.networks.api.root_urls")),
    path("network/", include("apps.networks.api.urls")),
    path("volume", include("apps.volumes.api.root_urls")),
    path("volume/", include("apps.volumes.api.urls")),
    path("metadata/", include("apps.networks.metadata")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("instances/", include("apps.instances.urls")),
    path("images/", include("apps.images.urls")),
    path("volumes/", include("apps.volumes.urls")),
    path("networks/", include("apps.networks.urls")),
    path("", include("apps.portal.urls")),
]
