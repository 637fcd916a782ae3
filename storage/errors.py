"""Errors raised by the storage package."""


class StorageError(Exception):
    """Root of every error raised by agentq storage."""


class ModelNotRegistered(StorageError):
    """No active model of that name and device is in the registry."""
