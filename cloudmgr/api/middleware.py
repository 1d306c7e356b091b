import uuid

from django.core.exceptions import BadRequest
from django.db import DataError


class RequestIdMiddleware:
    """Give every request an OpenStack-style request id, echoed in the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = f"req-{uuid.uuid4()}"
        response = self.get_response(request)
        response["X-OpenStack-Request-Id"] = request.request_id
        return response


class DatabaseRefusalMiddleware:
    """A value the database refuses (a NUL in a name, a number out of range: on SQLite an
    OverflowError) that reached a portal view: Django's 400 page, not a 500. API views answer it in
    their service's error body (cloudmgr.api.errors). Django logs the 400 with its traceback."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (DataError, OverflowError)):
            raise BadRequest(str(exception).strip()) from exception
        return None
