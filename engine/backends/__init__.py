"""Where a store's objects live: a local directory, S3 (any S3-compatible service) or Azure Blob.

A store is a flat namespace of keys (`store.json`, `chunks/ab/ab…`, `indexes/<rp>/<lun>.idx`,
`manifests/<rp>.json`, `leases/<uuid>.json`, `gc.lock`). Each backend maps them to its own
objects. A missing key raises FileNotFoundError (as a missing file always did); a failing
service raises StoreUnavailable naming the store's location.
"""

from __future__ import annotations

import os

# Re-exported: what a backend raises when its service cannot be reached.
from ..errors import StoreUnavailable
from .base import (
    Backend,
    ObjectInfo,
    ObjectTarget,
    is_object_location,
    split_location,
    target_from_env,
    target_to_env,
)
from .local import LocalBackend


def open_backend(location: str | os.PathLike[str], target: ObjectTarget | None) -> Backend:
    """The backend of a location: a local path, s3://bucket/prefix or az://container/prefix."""
    if is_object_location(location):
        # Loaded on first use: obstore's native client is only needed for object stores.
        from .objects import ObjectBackend

        if target is None:
            raise ValueError(f"{location} needs an ObjectTarget (endpoint and credentials)")
        return ObjectBackend(str(location), target)
    return LocalBackend(location)


__all__ = [
    "Backend",
    "ObjectInfo",
    "ObjectTarget",
    "StoreUnavailable",
    "is_object_location",
    "open_backend",
    "split_location",
    "target_from_env",
    "target_to_env",
]
