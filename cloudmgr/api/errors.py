"""One exception handler for the whole API: service errors and DRF errors become the error body
of the OpenStack service the view belongs to (its `error_style`)."""

import logging

from django.db import DataError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from cloudmgr.exceptions import ApplicationError

logger = logging.getLogger(__name__)

_NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def _drf_message(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {_drf_message(value)}" for field, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_drf_message(item) for item in detail)
    return str(detail)


def error_body(style: str, status: int, message: str) -> dict:
    title = _TITLES.get(status, "Error")
    if style == "nova" and status != 401:  # 401s come from Keystone's middleware, in its shape
        return {_NOVA_KEYS.get(status, "computeFault"): {"code": status, "message": message}}
    if style == "neutron":
        return {"NeutronError": {"type": title.replace(" ", ""), "message": message, "detail": ""}}
    return {"error": {"code": status, "title": title, "message": message}}


def exception_handler(exc, context):
    view = context.get("view")
    style = getattr(view, "error_style", "keystone")
    headers = {}
    if isinstance(exc, ApplicationError):
        status, message = exc.status_code, exc.message
        if status == 401:
            headers["WWW-Authenticate"] = 'Keystone uri="/identity/v3"'
    elif isinstance(exc, Http404):
        status, message = 404, str(exc) or "The resource could not be found."
    elif isinstance(exc, drf_exceptions.APIException):
        status, message = exc.status_code, _drf_message(exc.detail)
        if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
            headers["WWW-Authenticate"] = 'Keystone uri="/identity/v3"'
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    elif isinstance(exc, (DataError, OverflowError)):
        # A value the database refuses (SQL's data exceptions: too long, out of range, a NUL; on
        # SQLite an integer wider than 64 bits is an OverflowError before any SQL) is bad input
        # that validation let through: the client's 400, logged so the gap gets closed.
        logger.warning("the database refused a value of %s %s: %s", context["request"].method,
                       context["request"].path, exc)
        status, message = 400, f"Invalid input: {str(exc).strip()}"
    else:
        return None  # a bug: let Django log it and answer 500
    return Response(error_body(style, status, message), status=status, headers=headers)


class ServiceNotFoundView(APIView):
    """Any other path under a service's prefix: that service's JSON 404 (``error_style``, given
    to ``as_view``), never the portal's HTML page, whatever the method."""

    schema = None  # not an endpoint
    authentication_classes: list = []
    permission_classes: list = []
    error_style = "keystone"

    def http_method_not_allowed(self, request, *args, **kwargs):
        return self.get(request)

    def get(self, request, *args, **kwargs):
        return Response(error_body(self.error_style, 404, f"The resource {request.path} could not be found."),
                        status=404)
