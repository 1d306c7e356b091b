import uuid


class RequestIdMiddleware:
    """Give every request an OpenStack-style request id, echoed in the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = f"req-{uuid.uuid4()}"
        response = self.get_response(request)
        response["X-OpenStack-Request-Id"] = request.request_id
        return response
