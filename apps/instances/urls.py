"""The portal's instance pages (the API's are in apps/instances/api/urls.py)."""

from django.urls import path

from apps.instances import views, views_admin

app_name = "instances"

urlpatterns = [
    path("", views.instance_list, name="list"),
    path("rows/", views.instance_rows, name="rows"),
    path("launch/", views.instance_create, name="create"),
    path("<uuid:instance_id>/", views.instance_detail, name="detail"),
    path("<uuid:instance_id>/overview/", views.instance_overview, name="overview"),
    path("<uuid:instance_id>/console/", views.instance_console, name="console"),
    path("<uuid:instance_id>/delete/", views.instance_delete, name="delete"),
    path("<uuid:instance_id>/action/<str:action>/", views.instance_action, name="action"),
    path("<uuid:instance_id>/image/<str:kind>/", views.instance_image_create, name="image"),
    path("<uuid:instance_id>/password/", views.instance_change_password, name="password"),
    path("<uuid:instance_id>/vnc/", views.instance_vnc, name="vnc"),
    path("<uuid:instance_id>/vnc/url/", views.instance_vnc_url, name="vnc_url"),
    path("usage/", views.instance_usage, name="usage"),
    path("keypairs/", views_admin.keypair_list, name="keypairs"),
    path("keypairs/<str:name>/delete/", views_admin.keypair_delete, name="keypair-delete"),
    path("hosts/", views_admin.host_admin_list, name="hosts"),
    path("hosts/<str:hostname>/toggle/", views_admin.host_admin_toggle, name="host-toggle"),
    path("flavors/", views_admin.flavor_admin_list, name="flavors"),
    path("flavors/<str:flavor_id>/delete/", views_admin.flavor_admin_delete, name="flavor-delete"),
]
