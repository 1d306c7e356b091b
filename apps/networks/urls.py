"""The portal's network pages (the Neutron API is in apps/networks/api/urls.py, under /network/)."""

from django.urls import path

from apps.networks import views

app_name = "networks"

urlpatterns = [
    path("", views.network_list, name="list"),
    path("create/", views.network_create, name="create"),
    path("<uuid:network_id>/", views.network_detail, name="detail"),
    path("<uuid:network_id>/delete/", views.network_delete, name="delete"),
    path("<uuid:network_id>/subnets/", views.subnet_create, name="subnet-create"),
    path("subnets/<uuid:subnet_id>/delete/", views.subnet_delete, name="subnet-delete"),
    path("routers/", views.router_list, name="routers"),
    path("routers/create/", views.router_create, name="router-create"),
    path("routers/<uuid:router_id>/", views.router_detail, name="router-detail"),
    path("routers/<uuid:router_id>/gateway/", views.router_gateway, name="router-gateway"),
    path("routers/<uuid:router_id>/interfaces/", views.router_interface_add, name="router-interface-add"),
    path("routers/<uuid:router_id>/interfaces/<uuid:port_id>/remove/", views.router_interface_remove,
         name="router-interface-remove"),
    path("routers/<uuid:router_id>/delete/", views.router_delete, name="router-delete"),
    path("floating-ips/", views.floating_ip_list, name="floatingips"),
    path("floating-ips/allocate/", views.floating_ip_allocate, name="floatingip-allocate"),
    path("floating-ips/<uuid:floating_ip_id>/associate/", views.floating_ip_associate, name="floatingip-associate"),
    path("floating-ips/<uuid:floating_ip_id>/disassociate/", views.floating_ip_disassociate,
         name="floatingip-disassociate"),
    path("floating-ips/<uuid:floating_ip_id>/release/", views.floating_ip_release, name="floatingip-release"),
    path("security-groups/", views.security_group_list, name="securitygroups"),
    path("security-groups/create/", views.security_group_create, name="securitygroup-create"),
    path("security-groups/<uuid:group_id>/", views.security_group_detail, name="securitygroup-detail"),
    path("security-groups/<uuid:group_id>/delete/", views.security_group_delete, name="securitygroup-delete"),
    path("security-groups/<uuid:group_id>/rules/", views.security_group_rule_create, name="rule-create"),
    path("security-groups/rules/<uuid:rule_id>/delete/", views.security_group_rule_delete, name="rule-delete"),
    path("topology/", views.topology, name="topology"),
    path("topology/picture/", views.topology_picture, name="topology-picture"),
]
