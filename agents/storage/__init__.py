"""Host-local storage: qemu-img wrapper and the per-host base image cache."""


class StorageError(Exception):
    """A storage operation failed; the message is meant to be shown to users."""
