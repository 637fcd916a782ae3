"""Errors raised by the storage package: callers catch these, never SQLAlchemy's own."""


class StorageError(Exception):
    """Root of every error raised by agentq storage."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or is restarting: retry the same work later."""


class StorageRefused(StorageError):
    """The database refused the data itself (a value, a constraint): retrying cannot help."""


class ModelNotRegistered(StorageError):
    """No active model of that name and device is in the registry."""
