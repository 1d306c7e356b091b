"""OpenStack-style paging (`limit` + `marker`, a `next` link) and query-string helpers."""

from urllib.parse import urlencode

from django.db.models import QuerySet

from cloudmgr.api.versions import link
from cloudmgr.exceptions import ValidationError
from cloudmgr.models import filter_pk

MAX_LIMIT = 1000

_TRUE = {"1", "true", "yes", "on", ""}
_FALSE = {"0", "false", "no", "off"}


def query_flag(params, name: str) -> bool | None:
    """A boolean query parameter: None when absent. A bare `?all_tenants` counts as true."""
    if name not in params:
        return None
    value = params.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(f"Invalid value {value!r} for {name}: use true or false.")


def page_limit(params) -> int:
    """The query's `limit`, capped at MAX_LIMIT (400 unless a whole number of 0 or more)."""
    try:
        limit = min(int(params.get("limit", MAX_LIMIT)), MAX_LIMIT)
    except ValueError as exc:
        raise ValidationError("limit must be an integer.") from exc
    if limit < 0:
        raise ValidationError("limit must be 0 or more.")
    return limit


def paginate(request, queryset: QuerySet, collection: str) -> tuple[list, dict]:
    """One page after `marker` (an object id), at most `limit` long; `<collection>_links` holds
    the next page's link when there may be more."""
    params = request.query_params
    limit = page_limit(params)
    if marker := params.get("marker"):
        anchor = filter_pk(queryset, marker).values("created_at", "pk").first()
        if anchor is None:
            raise ValidationError(f"marker [{marker}] not found")
        # The querysets are ordered newest first (-created_at); ties broken by id.
        queryset = queryset.filter(created_at__lte=anchor["created_at"]).exclude(
            created_at=anchor["created_at"], pk__gte=anchor["pk"]
        )
    page = list(queryset.order_by("-created_at", "-pk")[:limit])
    links = {}
    if limit and len(page) == limit:
        query = {**params.dict(), "marker": str(page[-1].pk), "limit": limit}
        links[f"{collection}_links"] = [link("next", request.build_absolute_uri(request.path) + "?" + urlencode(query))]
    return page, links
