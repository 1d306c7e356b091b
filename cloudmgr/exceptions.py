"""The errors services raise. Each front door maps them: the API to an HTTP status and
OpenStack's error body, the portal to a message, a command to CommandError."""


class ApplicationError(Exception):
    status_code = 400
    title = "Bad Request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationError(ApplicationError):
    status_code = 400
    title = "Bad Request"


class NotAuthenticated(ApplicationError):
    status_code = 401
    title = "Unauthorized"


class PermissionDenied(ApplicationError):
    status_code = 403
    title = "Forbidden"


class NotFound(ApplicationError):
    status_code = 404
    title = "Not Found"


class Conflict(ApplicationError):
    status_code = 409
    title = "Conflict"


class InvalidState(Conflict):
    """The object's state does not allow the action (or another action is in progress)."""


class PreconditionFailed(ApplicationError):
    """The client's If-Match does not match the object any more (it changed meanwhile)."""

    status_code = 412
    title = "Precondition Failed"


class QuotaExceeded(ApplicationError):
    # Nova answers 403 for an exceeded quota (Neutron and Cinder 409/413); the API layer of each
    # service may remap it.
    status_code = 403
    title = "Forbidden"


class NoValidHost(ApplicationError):
    status_code = 409
    title = "Conflict"


class ServiceUnavailable(ApplicationError):
    status_code = 503
    title = "Service Unavailable"


class NotImplementedHere(ApplicationError):
    """An OpenStack API operation the hosts' driver does not provide (Nova's libvirt driver
    answers the same 501 for it)."""

    status_code = 501
    title = "Not Implemented"
