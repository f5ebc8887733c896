"""What every storage backend shares: the Backend protocol, object listings, where a
location points and how an object store is reached (ObjectTarget)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol


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

    def put_if_absent(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> bool:
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


# The command line and subprocesses name an object store's endpoint and credentials here.
ENV_ENDPOINT = "LIFEBOAT_OBJECT_ENDPOINT"
ENV_REGION = "LIFEBOAT_OBJECT_REGION"
ENV_PATH_STYLE = "LIFEBOAT_OBJECT_PATH_STYLE"
ENV_LOCK = "LIFEBOAT_OBJECT_LOCK"
ENV_CREDENTIALS = {
    "s3": {
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
    },
    "az": {
        "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
        "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
        "sas_token": "AZURE_STORAGE_SAS_TOKEN",
    },
}


def target_from_env(location: str | os.PathLike[str] | None) -> ObjectTarget | None:
    """The target of an object-store location from the environment (None for a local path):
    LIFEBOAT_OBJECT_ENDPOINT, _REGION, _PATH_STYLE=1, _LOCK=1, and the services' usual
    credential variables (AWS_ACCESS_KEY_ID..., AZURE_STORAGE_ACCOUNT_NAME...)."""
    if location is None or not is_object_location(location):
        return None
    scheme = split_location(str(location))[0]
    names = ENV_CREDENTIALS.get(scheme, {})
    creds = {k: os.environ[v] for k, v in names.items() if os.environ.get(v)}
    return ObjectTarget(
        endpoint=os.environ.get(ENV_ENDPOINT) or None,
        region=os.environ.get(ENV_REGION) or None,
        path_style=os.environ.get(ENV_PATH_STYLE) == "1",
        credentials=creds,
        object_lock=os.environ.get(ENV_LOCK) == "1",
    )


def target_to_env(location: str, target: ObjectTarget) -> dict[str, str]:
    """The environment that makes target_from_env(location) give target back."""
    env = {ENV_PATH_STYLE: "1" if target.path_style else "0"}
    env[ENV_LOCK] = "1" if target.object_lock else "0"
    if target.endpoint:
        env[ENV_ENDPOINT] = target.endpoint
    if target.region:
        env[ENV_REGION] = target.region
    names = ENV_CREDENTIALS.get(split_location(location)[0], {})
    env.update({names[k]: v for k, v in target.credentials.items() if k in names})
    return env
