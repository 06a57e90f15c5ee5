"""Backup artifact storage: an async streaming protocol and its backends."""

from opscenter.stores.backends import (
    PARTIAL_SUFFIX,
    LocalStorage,
    ObjectInfo,
    SpaceInfo,
    StorageBackend,
    StorageError,
    StorageReader,
    StorageWriter,
    validate_key,
)

__all__ = [
    "PARTIAL_SUFFIX",
    "LocalStorage",
    "ObjectInfo",
    "SpaceInfo",
    "StorageBackend",
    "StorageError",
    "StorageReader",
    "StorageWriter",
    "validate_key",
]
