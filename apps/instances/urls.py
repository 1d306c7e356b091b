"""The portal's instance pages (the API's are in apps/instances/api/urls.py)."""

from django.urls import path

from apps.instances import views

app_name = "instances"

urlpatterns = [
    path("", views.instance_list, name="list"),
    path("rows/", views.instance_rows, name="rows"),
    path("launch/", views.instance_create, name="create"),
    path("<uuid:instance_id>/", views.instance_detail, name="detail"),
    path("<uuid:instance_id>/overview/", views.instance_overview, name="overview"),
    path("<uuid:instance_id>/console/", views.instance_console, name="console"),
    path("<uuid:instance_id>/delete/", views.instance_delete, name="delete"),
]
