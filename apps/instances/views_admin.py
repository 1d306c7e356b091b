"""Portal pages for key pairs (per user), and for cloud admins: hosts (capacity, enable/disable)
and flavors. Each view parses input, calls one selector or service, renders."""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.hosts.selectors import host_get, host_list
from apps.hosts.services import host_disable, host_enable
from apps.instances import selectors, services
from apps.instances.models import Flavor
from apps.portal.decorators import admin_view, portal_view
from cloudmgr.exceptions import ApplicationError

_INPUT = {"class": "form-control"}


class KeypairForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs=_INPUT))
    public_key = forms.CharField(required=False, label="Public key (empty: generate a key pair)",
                                 widget=forms.Textarea(attrs={**_INPUT, "rows": 3, "class": "form-control font-monospace"}))


class FlavorForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs=_INPUT))
    vcpus = forms.IntegerField(min_value=1, label="vCPUs", widget=forms.NumberInput(attrs=_INPUT))
    ram = forms.IntegerField(min_value=1, label="RAM (MiB)", widget=forms.NumberInput(attrs=_INPUT))
    disk = forms.IntegerField(min_value=0, label="Root disk (GB)", widget=forms.NumberInput(attrs=_INPUT))
    is_public = forms.BooleanField(required=False, initial=True, label="Public")


@require_http_methods(["GET", "POST"])
@portal_view
def keypair_list(request, *, project):
    form = KeypairForm(request.POST or None)
    private_key = None
    if request.method == "POST" and form.is_valid():
        try:
            keypair, private_key = services.keypair_create(user=request.user, name=form.cleaned_data["name"],
                                                           public_key=form.cleaned_data["public_key"] or None)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Key pair {keypair.name} created.")
            form = KeypairForm()
    return render(request, "instances/keypair_list.html", {
        "keypairs": selectors.keypair_list(user=request.user), "form": form, "private_key": private_key})


@require_POST
@portal_view
def keypair_delete(request, *, project, name):
    try:
        services.keypair_delete(keypair=selectors.keypair_get(user=request.user, name=name))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Key pair {name} deleted.")
    return redirect("instances:keypairs")


@require_http_methods(["GET"])
@admin_view
def host_admin_list(request):
    hosts = list(host_list())
    usage = selectors.hosts_usage(hosts=hosts)
    rows = []
    for host in hosts:
        used = usage[host.pk]

        def pct(value, total):
            return min(100, round(100 * value / total)) if total else 0
        rows.append({"host": host, "used": used,
                     "cpu_cap": round(host.vcpus * host.cpu_allocation_ratio),
                     "ram_pct": pct(used.memory_mib, host.memory_mib * host.ram_allocation_ratio),
                     "cpu_pct": pct(used.vcpus, host.vcpus * host.cpu_allocation_ratio),
                     "disk_pct": pct(used.disk_gb, host.disk_gb * host.disk_allocation_ratio)})
    return render(request, "instances/host_admin_list.html", {"rows": rows})


@require_POST
@admin_view
def host_admin_toggle(request, hostname):
    try:
        host = host_get(hostname=hostname)
        if request.POST.get("enable"):
            host_enable(host=host)
            messages.success(request, f"Host {hostname} enabled.")
        else:
            host_disable(host=host, reason=request.POST.get("reason", "")[:255])
            messages.success(request, f"Host {hostname} disabled: no new instances are placed on it.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("instances:hosts")


@require_http_methods(["GET", "POST"])
@admin_view
def flavor_admin_list(request):
    form = FlavorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            flavor = services.flavor_create(**form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Flavor {flavor.name} created.")
            return redirect("instances:flavors")
    return render(request, "instances/flavor_admin_list.html",
                  {"flavors": Flavor.objects.filter(disabled=False), "form": form})


@require_POST
@admin_view
def flavor_admin_delete(request, flavor_id):
    flavor = Flavor.objects.filter(pk=flavor_id, disabled=False).first()
    if flavor is None:
        messages.error(request, f"Flavor {flavor_id} could not be found.")
    else:
        services.flavor_delete(flavor=flavor)
        messages.success(request, f"Flavor {flavor.name} deleted.")
    return redirect("instances:flavors")
