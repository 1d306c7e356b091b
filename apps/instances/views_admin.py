"""Portal pages for key pairs (per user), and for cloud admins: hosts (capacity, enable/disable)
and flavors. Each view parses input, calls one selector or service, renders."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.hosts.selectors import host_get, host_list
from apps.hosts.services import host_disable, host_enable
from apps.instances import selectors, services
from apps.instances.forms import FlavorForm, KeypairCreateForm, KeypairImportForm
from apps.portal.decorators import admin_view, portal_view
from cloudmgr.exceptions import ApplicationError


@require_http_methods(["GET", "POST"])
@never_cache
@portal_view
def keypair_list(request, *, project):
    """The user's key pairs, a form to generate one and a form to import a public key. A
    generated private key is in the answer to that POST only: it is stored nowhere."""
    importing = request.POST.get("mode") == "import"
    data = request.POST if request.method == "POST" else None
    create_form = KeypairCreateForm(None if importing else data)
    import_form = KeypairImportForm(data if importing else None)
    form = import_form if importing else create_form
    private_key, created = None, None
    if request.method == "POST" and form.is_valid():
        try:
            created, private_key = services.keypair_create(
                user=request.user, name=form.cleaned_data["name"],
                public_key=form.cleaned_data.get("public_key") if importing else None,
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            verb = "imported" if importing else "created"
            messages.success(request, f"Key pair {created.name} {verb}.")
            create_form, import_form = KeypairCreateForm(), KeypairImportForm()
    return render(request, "instances/keypair_list.html", {
        "keypairs": selectors.keypair_list(user=request.user), "create_form": create_form,
        "import_form": import_form, "importing": importing, "created": created, "private_key": private_key})


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


def _bar(used: int, total: int, ratio: float) -> dict:
    """One capacity bar: what instances claim against what the scheduler may hand out."""
    capacity = round(total * ratio)
    return {"used": used, "capacity": capacity, "pct": min(100, round(100 * used / capacity)) if capacity else 0}


@require_GET
@admin_view
def host_admin_list(request):
    hosts = list(host_list())
    usage = selectors.hosts_usage(hosts=hosts)
    rows = [{"host": host,
             "cpu": _bar(usage[host.pk].vcpus, host.vcpus, host.cpu_allocation_ratio),
             "ram": _bar(usage[host.pk].memory_mib, host.memory_mib, host.ram_allocation_ratio),
             "disk": _bar(usage[host.pk].disk_gb, host.disk_gb, host.disk_allocation_ratio)}
            for host in hosts]
    return render(request, "instances/host_admin_list.html", {"rows": rows})


@require_POST
@admin_view
def host_admin_toggle(request, hostname):
    try:
        host = host_get(hostname=hostname)
        if request.POST.get("enable"):
            host_enable(host=host)
            messages.success(request, f"Host {hostname} enabled: new instances may be placed on it.")
        else:
            reason = request.POST.get("reason", "").strip()[:255] or "disabled in the portal"
            host_disable(host=host, reason=reason)
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
                  {"flavors": selectors.flavor_list(user=request.user), "form": form})


@require_POST
@admin_view
def flavor_admin_delete(request, flavor_id):
    try:
        flavor = selectors.flavor_get(user=request.user, name_or_id=flavor_id)
        services.flavor_delete(flavor=flavor)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Flavor {flavor.name} deleted.")
    return redirect("instances:flavors")
