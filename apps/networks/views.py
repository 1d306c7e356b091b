"""The portal's network pages: networks and subnets, routers, floating IPs, security groups and
their rules, and the topology picture. Each view parses with a form, calls one selector or one
service (``apps.networks.services``; reads from ``portal_selectors``, which narrow Neutron's
visibility to the portal's project), and renders.

Writes are plain form posts that answer with a redirect (POST, redirect, GET), so a reload never
posts twice. Destructive ones are sent by htmx with ``hx-confirm`` (the browser's dialog; a
cancelled one sends nothing) and answer ``HX-Redirect``, so the whole page shows the result and
its message. A service's refusal is a message, or the form's error; something another project
owns is "could not be found", with HTTP 404.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.networks import portal_selectors as ps
from apps.networks import services
from apps.networks.forms import (
    FloatingIPAllocateForm,
    FloatingIPAssociateForm,
    GatewayForm,
    InterfaceForm,
    NetworkForm,
    RouterForm,
    SecurityGroupForm,
    SecurityGroupRuleForm,
    SubnetForm,
)
from apps.portal.decorators import portal_view
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import ApplicationError, NotFound


def _go(request, name: str, *args):
    """After a write: to that page (by HX-Redirect for an htmx request, so its message shows)."""
    url = reverse(name, args=args)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _not_found(request, exc: NotFound, back: str):
    """Not in the project's view (another project's, or gone): a 404 page that says so. An htmx
    request (a button on a page that went stale) goes back to the list with the message."""
    if request.htmx:
        messages.error(request, exc.message)
        return HttpResponseClientRedirect(reverse(back))
    return render(request, "networks/not_found.html", {"message": exc.message, "back": back}, status=404)


def _attempt(request, action, success) -> bool:
    """Run one service call; its refusal, or ``success`` (a message, or a function of the call's
    result giving one), shows on the next page. True if the service did it."""
    try:
        result = action()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return False
    messages.success(request, success(result) if callable(success) else success)
    return True


def _name(obj) -> str:
    return obj.name or str(obj.pk)


# --- networks and subnets --------------------------------------------------------------------


def _network_list_page(request, project, form=None):
    return render(request, "networks/network_list.html", {
        "networks": ps.network_portal_list(user=request.user, project=project),
        "form": form or NetworkForm(is_admin=is_cloud_admin(user=request.user)),
    })


@require_GET
@portal_view
def network_list(request, *, project):
    return _network_list_page(request, project)


@require_POST
@portal_view(write=True)
def network_create(request, *, project):
    form = NetworkForm(request.POST, is_admin=is_cloud_admin(user=request.user))
    if form.is_valid():
        try:
            network = services.network_create(
                user=request.user, project=project, name=form.cleaned_data["name"],
                description=form.cleaned_data["description"], admin_state_up=form.cleaned_data["admin_state_up"],
                shared=form.cleaned_data.get("shared", False))
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Network {_name(network)} created. Give it a subnet below.")
            return redirect("networks:detail", network.pk)
    return _network_list_page(request, project, form)


def _network_page(request, project, network, subnet_form=None, status=200):
    return render(request, "networks/network_detail.html", {
        "network": network,
        "ports": ps.network_portal_ports(user=request.user, project=project, network=network),
        "subnet_form": subnet_form or SubnetForm(),
        "can_modify": request.portal_can_write and (network.project_id == project.pk
                                                    or is_cloud_admin(user=request.user)),
    }, status=status)


@require_GET
@portal_view
def network_detail(request, *, project, network_id):
    try:
        network = ps.network_portal_get(user=request.user, project=project, network_id=network_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:list")
    return _network_page(request, project, network)


@require_POST
@portal_view(write=True)
def network_delete(request, *, project, network_id):
    try:
        network = ps.network_portal_get(user=request.user, project=project, network_id=network_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:list")
    if not _attempt(request, lambda: services.network_delete(network=network, user=request.user, project=project),
                    f"Network {_name(network)} deleted."):
        return _go(request, "networks:detail", network.pk)
    return _go(request, "networks:list")


@require_POST
@portal_view(write=True)
def subnet_create(request, *, project, network_id):
    try:
        network = ps.network_portal_get(user=request.user, project=project, network_id=network_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:list")
    form = SubnetForm(request.POST)
    if form.is_valid():
        try:
            subnet = services.subnet_create(user=request.user, project=project, network=network,
                                            **form.service_kwargs())
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Subnet {subnet.cidr} added to {_name(network)}.")
            return redirect("networks:detail", network.pk)
    return _network_page(request, project, network, subnet_form=form)


@require_POST
@portal_view(write=True)
def subnet_delete(request, *, project, subnet_id):
    try:
        subnet = ps.subnet_portal_get(user=request.user, project=project, subnet_id=subnet_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:list")
    _attempt(request, lambda: services.subnet_delete(subnet=subnet, user=request.user, project=project),
             f"Subnet {subnet.cidr} deleted.")
    return _go(request, "networks:detail", subnet.network_id)


# --- routers ---------------------------------------------------------------------------------


def _router_list_page(request, project, form=None):
    external = ps.network_portal_external(user=request.user, project=project)
    return render(request, "networks/router_list.html", {
        "routers": ps.router_portal_list(user=request.user, project=project),
        "form": form or RouterForm(external_networks=external, initial={"external_network": external.first()}),
    })


@require_GET
@portal_view
def router_list(request, *, project):
    return _router_list_page(request, project)


@require_POST
@portal_view(write=True)
def router_create(request, *, project):
    form = RouterForm(request.POST, external_networks=ps.network_portal_external(user=request.user, project=project))
    if form.is_valid():
        external = form.cleaned_data["external_network"]
        try:
            router = services.router_create(
                user=request.user, project=project, name=form.cleaned_data["name"],
                external_gateway_info={"network_id": str(external.pk)} if external else None)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Router {_name(router)} created. Connect it to a subnet below.")
            return redirect("networks:router-detail", router.pk)
    return _router_list_page(request, project, form)


def _router_page(request, project, router, interface_form=None):
    external = ps.network_portal_external(user=request.user, project=project)
    attached = {i.subnet_id for i in router.interfaces.all()}
    subnets = ps.subnet_portal_choices(user=request.user, project=project).exclude(pk__in=attached)
    return render(request, "networks/router_detail.html", {
        "router": router,
        "interface_form": interface_form or InterfaceForm(subnets=subnets),
        "gateway_form": GatewayForm(external_networks=external,
                                    initial={"external_network": router.gateway_network or external.first()}),
    })


def _router(request, project, router_id):
    return ps.router_portal_get(user=request.user, project=project, router_id=router_id)


@require_GET
@portal_view
def router_detail(request, *, project, router_id):
    try:
        router = _router(request, project, router_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:routers")
    return _router_page(request, project, router)


@require_POST
@portal_view(write=True)
def router_gateway(request, *, project, router_id):
    """Set the external gateway (``external_network``), or clear it (``clear``)."""
    try:
        router = _router(request, project, router_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:routers")
    if "clear" in request.POST:
        info, done = None, f"The gateway of router {_name(router)} is cleared."
    else:
        form = GatewayForm(request.POST,
                           external_networks=ps.network_portal_external(user=request.user, project=project))
        if not form.is_valid():
            messages.error(request, "Choose an external network for the gateway.")
            return _go(request, "networks:router-detail", router.pk)
        network = form.cleaned_data["external_network"]
        info, done = {"network_id": str(network.pk)}, f"Router {_name(router)} has its gateway on {_name(network)}."
    _attempt(request, lambda: services.router_update(router=router, user=request.user, project=project,
                                                     changes={"external_gateway_info": info}), done)
    return _go(request, "networks:router-detail", router.pk)


@require_POST
@portal_view(write=True)
def router_interface_add(request, *, project, router_id):
    try:
        router = _router(request, project, router_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:routers")
    form = InterfaceForm(request.POST, subnets=ps.subnet_portal_choices(user=request.user, project=project))
    if form.is_valid():
        subnet = form.cleaned_data["subnet"]
        try:
            services.router_interface_add(router=router, user=request.user, project=project, subnet_id=subnet.pk)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Router {_name(router)} is connected to {subnet.cidr}.")
            return redirect("networks:router-detail", router.pk)
    return _router_page(request, project, router, interface_form=form)


@require_POST
@portal_view(write=True)
def router_interface_remove(request, *, project, router_id, port_id):
    try:
        router = _router(request, project, router_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:routers")
    _attempt(request,
             lambda: services.router_interface_remove(router=router, user=request.user, project=project,
                                                      port_id=port_id),
             lambda info: f"Router {_name(router)} is no longer on subnet {info['subnet_id']}.")
    return _go(request, "networks:router-detail", router.pk)


@require_POST
@portal_view(write=True)
def router_delete(request, *, project, router_id):
    try:
        router = _router(request, project, router_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:routers")
    if not _attempt(request, lambda: services.router_delete(router=router, user=request.user, project=project),
                    f"Router {_name(router)} deleted."):
        return _go(request, "networks:router-detail", router.pk)
    return _go(request, "networks:routers")


# --- floating IPs ----------------------------------------------------------------------------


def _floating_ip_page(request, project, form=None):
    external = ps.network_portal_external(user=request.user, project=project)
    return render(request, "networks/floatingip_list.html", {
        "rows": ps.floating_ip_portal_rows(user=request.user, project=project),
        "form": form or FloatingIPAllocateForm(external_networks=external),
        "associate_form": FloatingIPAssociateForm(
            targets=ps.floating_ip_portal_targets(user=request.user, project=project)),
    })


@require_GET
@portal_view
def floating_ip_list(request, *, project):
    return _floating_ip_page(request, project)


@require_POST
@portal_view(write=True)
def floating_ip_allocate(request, *, project):
    form = FloatingIPAllocateForm(request.POST,
                                  external_networks=ps.network_portal_external(user=request.user, project=project))
    if form.is_valid():
        try:
            fip = services.floating_ip_create(user=request.user, project=project,
                                              floating_network_id=form.cleaned_data["floating_network"].pk,
                                              description=form.cleaned_data["description"])
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Floating IP {fip.floating_ip_address} allocated.")
            return redirect("networks:floatingips")
    return _floating_ip_page(request, project, form)


def _fip(request, project, floating_ip_id):
    return ps.floating_ip_portal_get(user=request.user, project=project, floating_ip_id=floating_ip_id)


@require_POST
@portal_view(write=True)
def floating_ip_associate(request, *, project, floating_ip_id):
    try:
        fip = _fip(request, project, floating_ip_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:floatingips")
    form = FloatingIPAssociateForm(request.POST,
                                   targets=ps.floating_ip_portal_targets(user=request.user, project=project))
    if not form.is_valid():
        messages.error(request, f"Choose the instance address that {fip.floating_ip_address} should lead to.")
        return _go(request, "networks:floatingips")
    target = form.cleaned_data["target"]
    _attempt(request, lambda: services.floating_ip_update(fip=fip, user=request.user, project=project, changes=target),
             f"Floating IP {fip.floating_ip_address} is associated with {target['fixed_ip_address']}.")
    return _go(request, "networks:floatingips")


@require_POST
@portal_view(write=True)
def floating_ip_disassociate(request, *, project, floating_ip_id):
    try:
        fip = _fip(request, project, floating_ip_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:floatingips")
    _attempt(request,
             lambda: services.floating_ip_update(fip=fip, user=request.user, project=project,
                                                 changes={"port_id": None}),
             f"Floating IP {fip.floating_ip_address} is disassociated.")
    return _go(request, "networks:floatingips")


@require_POST
@portal_view(write=True)
def floating_ip_release(request, *, project, floating_ip_id):
    try:
        fip = _fip(request, project, floating_ip_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:floatingips")
    _attempt(request, lambda: services.floating_ip_delete(fip=fip, user=request.user, project=project),
             f"Floating IP {fip.floating_ip_address} released.")
    return _go(request, "networks:floatingips")


# --- security groups -------------------------------------------------------------------------


def _security_group_list_page(request, project, form=None):
    return render(request, "networks/securitygroup_list.html", {
        "groups": ps.security_group_portal_list(user=request.user, project=project),
        "form": form or SecurityGroupForm(),
    })


@require_GET
@portal_view
def security_group_list(request, *, project):
    # As Neutron's list: a project's `default` group is made the first time its groups are looked at.
    services.security_group_default(project=project)
    return _security_group_list_page(request, project)


@require_POST
@portal_view(write=True)
def security_group_create(request, *, project):
    form = SecurityGroupForm(request.POST)
    if form.is_valid():
        try:
            group = services.security_group_create(user=request.user, project=project, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Security group {group.name} created, with rules that let all traffic out.")
            return redirect("networks:securitygroup-detail", group.pk)
    return _security_group_list_page(request, project, form)


def _group(request, project, group_id):
    return ps.security_group_portal_get(user=request.user, project=project, group_id=group_id)


def _security_group_page(request, project, group, rule_form=None):
    groups = ps.security_group_portal_list(user=request.user, project=project)
    return render(request, "networks/securitygroup_detail.html", {
        "group": group,
        "rule_form": rule_form or SecurityGroupRuleForm(groups=groups),
    })


@require_GET
@portal_view
def security_group_detail(request, *, project, group_id):
    try:
        group = _group(request, project, group_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:securitygroups")
    return _security_group_page(request, project, group)


@require_POST
@portal_view(write=True)
def security_group_delete(request, *, project, group_id):
    try:
        group = _group(request, project, group_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:securitygroups")
    if not _attempt(request, lambda: services.security_group_delete(group=group, user=request.user, project=project),
                    f"Security group {group.name} deleted."):
        return _go(request, "networks:securitygroup-detail", group.pk)
    return _go(request, "networks:securitygroups")


@require_POST
@portal_view(write=True)
def security_group_rule_create(request, *, project, group_id):
    try:
        group = _group(request, project, group_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:securitygroups")
    form = SecurityGroupRuleForm(request.POST, groups=ps.security_group_portal_list(user=request.user,
                                                                                      project=project))
    if form.is_valid():
        try:
            services.security_group_rule_create(user=request.user, project=project, group=group,
                                                **form.service_kwargs())
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Rule added to {group.name}.")
            return redirect("networks:securitygroup-detail", group.pk)
    return _security_group_page(request, project, group, rule_form=form)


@require_POST
@portal_view(write=True)
def security_group_rule_delete(request, *, project, rule_id):
    try:
        rule = ps.security_group_rule_portal_get(user=request.user, project=project, rule_id=rule_id)
    except NotFound as exc:
        return _not_found(request, exc, "networks:securitygroups")
    _attempt(request, lambda: services.security_group_rule_delete(rule=rule, user=request.user, project=project),
             f"Rule deleted from {rule.security_group.name}.")
    return _go(request, "networks:securitygroup-detail", rule.security_group_id)


# --- topology --------------------------------------------------------------------------------


@require_GET
@portal_view
def topology(request, *, project):
    return render(request, "networks/topology.html",
                  {"topology": ps.network_topology(user=request.user, project=project)})


@require_GET
@portal_view
def topology_picture(request, *, project):
    """The picture alone (inline SVG), polled by htmx so that new instances and links appear."""
    return render(request, "networks/_topology.html",
                  {"topology": ps.network_topology(user=request.user, project=project)})
