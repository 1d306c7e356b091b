"""Neutron's error types on cloudmgr's exceptions: the API puts ``neutron_type`` in the
``NeutronError`` body (clients and tests branch on it), the other doors show the message."""

from cloudmgr.exceptions import ApplicationError, Conflict, NotFound, PermissionDenied, ValidationError


def _typed(cls: type[ApplicationError], neutron_type: str, message: str) -> ApplicationError:
    exc = cls(message)
    exc.neutron_type = neutron_type
    return exc


def not_found(kind: str, object_id) -> ApplicationError:
    """``NetworkNotFound`` ... with Neutron's message."""
    label = {"FloatingIP": "Floating IP", "SecurityGroup": "Security group", "SecurityGroupRule": "Security group rule"}
    return _typed(NotFound, f"{kind}NotFound", f"{label.get(kind, kind)} {object_id} could not be found.")


def conflict(neutron_type: str, message: str) -> ApplicationError:
    return _typed(Conflict, neutron_type, message)


def bad_request(message: str, neutron_type: str = "HTTPBadRequest") -> ApplicationError:
    return _typed(ValidationError, neutron_type, message)


def invalid_input(message: str) -> ApplicationError:
    return _typed(ValidationError, "InvalidInput", f"Invalid input for operation: {message}")


def forbidden(message: str = "Policy does not allow this operation to be performed.") -> ApplicationError:
    return _typed(PermissionDenied, "PolicyNotAuthorized", message)
