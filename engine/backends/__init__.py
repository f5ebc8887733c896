"""Where a store's objects live: a local directory, S3 (any S3-compatible service) or Azure Blob.

A store is a flat namespace of keys (`store.json`, `chunks/ab/ab…`, `indexes/<rp>/<lun>.idx`,
`manifests/<rp>.json`, `leases/<uuid>.json`, `gc.lock`). Each backend maps them to its own
objects. A missing key raises FileNotFoundError (as a missing file always did); a failing
service raises StoreUnavailable naming the store's location.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from ..errors import StoreUnavailable


class ObjectInfo(NamedTuple):
    key: str
    size: int
    mtime: float  # seconds since the epoch


@dataclass(frozen=True)
class ObjectTarget:
    """How to reach an object store: the service endpoint and the credentials.

    S3 credentials: access_key_id, secret_access_key[, session_token]. Azure: account_name
    and account_key, or account_name and sas_token. With object_lock, every object is
    written with a COMPLIANCE retention (S3 Object Lock) when the writer gives a date."""

    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    credentials: Mapping[str, str] = field(default_factory=dict)
    object_lock: bool = False

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        return (
            f"ObjectTarget(endpoint={self.endpoint!r}, region={self.region!r}, "
            f"path_style={self.path_style}, credentials=<{len(self.credentials)} keys>, "
            f"object_lock={self.object_lock})"
        )


class Backend(Protocol):
    """The operations a store needs from where its objects live."""

    location: str
    is_local: bool

    def put(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> None:
        """Write (or replace) an object durably."""

    def put_if_absent(
        self, key: str, data: bytes, *, retain_until: datetime | None = None
    ) -> bool:
        """Create an object only if no object has the key; False if one has."""

    def get(self, key: str) -> bytes:
        """An object's bytes; FileNotFoundError if absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under a folder prefix ("chunks/", "" for all; no order promised)."""

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None: ...

    def requests(self) -> int:
        """How many requests this backend made so far (0 for a local directory)."""


def is_object_location(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and location.startswith(("s3://", "az://"))


def split_location(location: str) -> tuple[str, str, str]:
    """('s3' | 'az', bucket or container, prefix without slashes at the ends)."""
    scheme, _, rest = location.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{location!r} names no bucket or container")
    return scheme, bucket, prefix.strip("/")


def open_backend(location: str | os.PathLike[str], target: ObjectTarget | None) -> Backend:
    """The backend of a location: a local path, s3://bucket/prefix or az://container/prefix."""
    if is_object_location(location):
        from .objects import ObjectBackend

        if target is None:
            raise ValueError(f"{location} needs an ObjectTarget (endpoint and credentials)")
        return ObjectBackend(str(location), target)
    from .local import LocalBackend

    return LocalBackend(location)


__all__ = [
    "Backend",
    "ObjectInfo",
    "ObjectTarget",
    "StoreUnavailable",
    "is_object_location",
    "open_backend",
    "split_location",
]
