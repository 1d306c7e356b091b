"""Base views of every OpenStack-style API. They hand the acting user, project and request id to
the selectors and services, which scope every query by the project (another project's object is
404)."""

from rest_framework import viewsets

from cloudmgr.exceptions import ValidationError


def only_keys(body: dict, allowed: set[str], what: str) -> None:
    """400 with the JSON-schema message OpenStack services give for keys ``what`` does not take."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(f"Invalid input for field/attribute {what}. Additional properties are not allowed "
                              f"({', '.join(map(repr, unknown))} were unexpected)")


def only_field(args, action: str, field: str):
    """The value of an action body that is one required field and nothing else (Nova's schema)."""
    if not isinstance(args, dict) or field not in args:
        raise ValidationError(f"Invalid input for field/attribute {action}. '{field}' is a required property")
    only_keys(args, {field}, action)
    return args[field]


class ProjectScopedViewSet(viewsets.ViewSet):
    error_style = "keystone"
    admin_only = False
    project_scoped = True

    @property
    def user(self):
        return self.request.user

    @property
    def project(self):
        return self.request.auth.project

    @property
    def request_id(self) -> str:
        return getattr(self.request._request, "request_id", "")

    def body(self, key: str) -> dict:
        """The object under the OpenStack envelope key (`{"server": {...}}`), or 400."""
        data = self.request.data
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ValidationError(f"The request body must be a JSON object with a '{key}' object.")
        return data[key]
