"""OpenStack microversions: `OpenStack-API-Version: <service> X.Y` (and Nova's legacy
`X-OpenStack-Nova-API-Version`). No header means the minimum; `latest` means the maximum; a
version out of range is 406. The version used is echoed in the response headers.

A view action that exists only in a span of versions names it in ``action_versions``; outside
that span it answers 404, as an API method that does not exist at that version (Nova's
``VersionNotFoundForAPIMethod``). Behaviour that changes within an action asks `supports`."""

from dataclasses import dataclass
from functools import lru_cache

from rest_framework.exceptions import NotAcceptable

from cloudmgr.exceptions import NotFound


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> "Version":
        major, minor = text.strip().split(".")
        return cls(int(major), int(minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@lru_cache(maxsize=None)
def _version(text: str) -> Version:
    return Version.parse(text)


def in_span(version: Version, minimum: str, maximum: str | None = None) -> bool:
    return _version(minimum) <= version and (maximum is None or version <= _version(maximum))


def supports(request, minimum: str, maximum: str | None = None) -> bool:
    """Whether the request's microversion is within ``minimum``..``maximum`` (inclusive)."""
    return in_span(request.api_version, minimum, maximum)


class MicroversionMixin:
    service_type: str = ""
    legacy_header: str | None = None
    min_version: Version
    max_version: Version
    action_versions: dict[str, tuple[str, str | None]] = {}

    def _requested(self, request) -> str | None:
        header = request.META.get("HTTP_OPENSTACK_API_VERSION", "")
        for part in header.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == self.service_type and value:
                return value
        if self.legacy_header:
            return request.META.get("HTTP_" + self.legacy_header.upper().replace("-", "_"))
        return None

    def initial(self, request, *args, **kwargs):
        requested = self._requested(request)
        if requested is None:
            version = self.min_version
        elif requested.strip() == "latest":
            version = self.max_version
        else:
            try:
                version = Version.parse(requested)
            except ValueError as exc:
                raise NotAcceptable(f"Invalid API version {requested!r}.") from exc
            if not self.min_version <= version <= self.max_version:
                raise NotAcceptable(
                    f"Version {version} is not supported by the API. "
                    f"Minimum is {self.min_version} and maximum is {self.max_version}."
                )
        request.api_version = version
        super().initial(request, *args, **kwargs)  # authentication first: 401 before 404
        span = self.action_versions.get(getattr(self, "action", None) or "")
        if span is not None and not in_span(version, *span):
            raise NotFound("The resource could not be found.")

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        version = getattr(request, "api_version", self.min_version)
        response["OpenStack-API-Version"] = f"{self.service_type} {version}"
        if self.legacy_header:
            response[self.legacy_header] = str(version)
        response["Vary"] = ", ".join(filter(None, [response.get("Vary"), "OpenStack-API-Version"]))
        return response
