from django.urls import path

from apps.instances.api import views

flavors = views.FlavorViewSet
servers = views.ServerViewSet

urlpatterns = [
    path("", views.ComputeVersionsView.as_view()),
    path("v2.1", views.ComputeVersionView.as_view()),
    path("v2.1/", views.ComputeVersionView.as_view()),
    path("v2.1/flavors", flavors.as_view({"get": "list"})),
    path("v2.1/flavors/detail", flavors.as_view({"get": "list_detail"})),
    path("v2.1/flavors/<str:pk>", flavors.as_view({"get": "retrieve"})),
    path("v2.1/servers", servers.as_view({"get": "list", "post": "create"})),
    path("v2.1/servers/detail", servers.as_view({"get": "list_detail"})),
    path("v2.1/servers/<str:pk>", servers.as_view({"get": "retrieve", "delete": "destroy"})),
    path("v2.1/servers/<str:pk>/action", servers.as_view({"post": "server_action"})),
]
