"""The network part of pages other apps render: the instance page's addresses."""

from django import template

from apps.networks.portal_selectors import instance_portal_addresses

register = template.Library()


@register.inclusion_tag("networks/_instance_addresses.html")
def instance_addresses(instance):
    """Its fixed addresses by network, each with its floating IP (a read: one selector)."""
    return {"addresses": instance_portal_addresses(instance=instance)}
