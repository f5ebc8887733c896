"""Storage targets: the object-storage accounts vault stores may live in (site admins only).

A target names where the workers find its credentials (environment variable names, or a JSON
file on the server), never the secrets: `vaults.stores.credentials` reads them when a store is
opened. A target stays while a vault names it (its stores would become unreachable). Its Test
runs on a worker, where the credentials are used.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from jobs.models import FINISHED, Job, Operation, Param, Status
from jobs.runner import create_job
from vaults import access, audit, stores
from vaults.models import (
    CREDENTIAL_KEYS,
    CredentialsSource,
    StorageTarget,
    TargetKind,
    Vault,
    location_errors,
    location_scheme,
)


class TargetFields(TypedDict, total=False):
    name: str
    kind: str
    endpoint: str
    region: str
    path_style: bool
    credentials_source: str
    credentials_env: dict[str, str]
    credentials_file: str
    object_lock: bool


TARGET_FIELDS = tuple(TargetFields.__annotations__)
_env_name = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_region = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def target_summary(target: StorageTarget) -> dict[str, Any]:
    """What the audit log records (names of variables and files, no secret)."""
    return {f: getattr(target, f) for f in TARGET_FIELDS}


def _unknown(given: Mapping[str, object]) -> None:
    unknown = set(given) - set(TARGET_FIELDS)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})


def _endpoint_error(endpoint: str) -> str | None:
    if not endpoint:
        return None
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as e:
        return f"{endpoint!r} is not a URL: {e}."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Give the endpoint as http(s)://host[:port], or leave it empty for the provider's."
    if parts.query or parts.fragment or parts.username or (port is not None and port == 0):
        return "The endpoint is only scheme, host and port (no query, user or fragment)."
    return None


def _credential_errors(target: StorageTarget) -> dict[str, str]:
    known = CREDENTIAL_KEYS.get(target.kind, ())
    if target.credentials_source == CredentialsSource.FILE:
        errors = {}
        if not os.path.isabs(target.credentials_file or ""):
            errors["credentials_file"] = "Give the absolute path of a JSON file the workers read."
        if target.credentials_env:
            errors["credentials_env"] = "Leave empty when the credentials come from a file."
        return errors
    if target.credentials_file:
        return {"credentials_file": "Leave empty when the credentials come from variables."}
    names = target.credentials_env
    if not isinstance(names, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in names.items()
    ):
        return {"credentials_env": "Map each credential key to an environment variable name."}
    unknown = sorted(set(names) - set(known))
    if unknown:
        return {
            "credentials_env": f"Unknown credential key(s) {', '.join(unknown)}; "
            f"{target.kind} takes {', '.join(known)}."
        }
    bad = sorted(v for v in names.values() if not _env_name.match(v))
    if bad:
        return {"credentials_env": f"Not an environment variable name: {', '.join(bad)}."}
    missing = stores.missing_credentials(target.kind, set(names))
    if missing:
        return {"credentials_env": f"Name the variable of {missing}."}
    return {}


def _check(target: StorageTarget) -> None:
    errors: dict[str, str] = {}
    try:
        target.full_clean(exclude=["created_by", "credentials_env"])
    except ValidationError as e:
        errors.update({f: " ".join(m) for f, m in e.message_dict.items()})
    why = _endpoint_error(target.endpoint)
    if why:
        errors["endpoint"] = why
    if target.region and not _region.match(target.region):
        errors["region"] = "Letters, digits and hyphens (e.g. eu-west-1)."
    if target.kind == TargetKind.AZURE:
        if target.path_style:
            errors["path_style"] = "Path-style addressing is for S3 targets only."
        if target.object_lock:
            errors["object_lock"] = "S3 Object Lock is for S3 targets only."
    if target.kind in CREDENTIAL_KEYS:
        for field, message in _credential_errors(target).items():
            errors.setdefault(field, message)
    clash = StorageTarget.objects.filter(name__iexact=target.name).exclude(pk=target.pk)
    if target.name and clash.exists():
        errors.setdefault("name", "A storage target with this name already exists.")
    if errors:
        raise ValidationError(errors)


def _users_of(target: StorageTarget) -> list[str]:
    vaults = Vault.objects.filter(Q(storage_target=target) | Q(secondary_target=target))
    return sorted(set(vaults.values_list("name", flat=True)))


def create_target(
    *, by: User, request: HttpRequest | None = None, **fields: Unpack[TargetFields]
) -> StorageTarget:
    access.require_site(by, "manage_storage_targets")
    _unknown(fields)
    target = StorageTarget(created_by=by, **fields)
    _check(target)
    with transaction.atomic():
        target.save()
        audit.record(
            "storage_target.create",
            actor=by,
            request=request,
            obj=target,
            after=target_summary(target),
        )
    return target


def update_target(
    target: StorageTarget,
    *,
    by: User,
    request: HttpRequest | None = None,
    **changes: Unpack[TargetFields],
) -> StorageTarget:
    access.require_site(by, "manage_storage_targets")
    _unknown(changes)
    if "kind" in changes and changes["kind"] != target.kind and _users_of(target):
        raise ValidationError(
            {"kind": f"Vault(s) {', '.join(_users_of(target))} keep stores in this target."}
        )
    before = target_summary(target)
    for field, value in changes.items():
        setattr(target, field, value)
    _check(target)
    with transaction.atomic():
        target.save()
        audit.record(
            "storage_target.update",
            actor=by,
            request=request,
            obj=target,
            before=before,
            after=target_summary(target),
        )
    return target


def delete_target(target: StorageTarget, *, by: User, request: HttpRequest | None = None) -> None:
    access.require_site(by, "manage_storage_targets")
    users = _users_of(target)
    if users:
        raise ValidationError(
            {
                "detail": f"Storage target {target.name} holds the stores of vault(s) "
                f"{', '.join(users)}; it cannot be deleted while they name it."
            }
        )
    with transaction.atomic():
        audit.record(
            "storage_target.delete",
            actor=by,
            request=request,
            obj=target,
            before=target_summary(target),
        )
        target.delete()


# -- the Test button ------------------------------------------------------------------------------
#
# The credentials are read where stores are opened: on the workers. So the Test is a short
# `test_target` job (`jobs.target_test`) on a worker, and its answer is that job's outcome:
# the web server's own environment proves nothing about the workers'.


@dataclass(frozen=True)
class TargetCheck:
    """A Test of a target: its job, and once the job has finished, the answer."""

    job: int
    status: str
    finished: bool
    ok: bool | None  # None until the job has finished
    location: str
    detail: str
    worker: str  # the worker process that opened the location ("" until one claims the job)


def default_location(target: StorageTarget) -> str:
    """A location to test the target with: the first vault store (or secondary) it holds."""
    vault = Vault.objects.filter(storage_target=target).order_by("name").first()
    if vault is not None:
        return vault.vault_location
    vault = Vault.objects.filter(secondary_target=target).order_by("name").first()
    return vault.secondary_location if vault is not None else ""


def _check_of(job: Job) -> TargetCheck:
    location = str(job.params.get(Param.LOCATION, ""))
    finished = job.status in FINISHED
    ok: bool | None = None
    if job.status == Status.QUEUED:
        detail = job.waiting_message or "Waiting for a worker to run the test."
    elif not finished:
        detail = f"Running on {job.worker}."
    elif job.status == Status.COMPLETED:
        ok, detail = True, str(job.result.get("detail", ""))
    else:
        ok, detail = False, job.error_message or job.get_status_display()
    return TargetCheck(job.pk, job.status, finished, ok, location, detail, job.worker)


def check_target(
    target: StorageTarget, *, by: User, location: str = "", request: HttpRequest | None = None
) -> TargetCheck:
    """Queue a Test of `location` (default: a vault's store in this target): a worker opens it
    with the target's credentials as that worker reads them. The queued check; its answer
    comes from `target_check` once the job has finished."""
    access.require_site(by, "manage_storage_targets")
    location = location or default_location(target)
    if not location:
        raise ValidationError({"location": f"Give a {target.scheme}://… location to test."})
    why = location_errors(location)
    if why is None and location_scheme(location) is None:
        why = f"Give a {target.scheme}://… location: {location} is a local directory."
    if why:
        raise ValidationError({"location": why})
    with transaction.atomic():
        job = create_job(
            operation=Operation.TEST_TARGET,
            by=by,
            params={Param.TARGET: target.pk, Param.LOCATION: location},
        )
        audit.record(
            "storage_target.test",
            actor=by,
            request=request,
            obj=target,
            after={"location": location, "job": job.pk},
        )
    return _check_of(job)


def target_check(target: StorageTarget, job_id: int, *, by: User) -> TargetCheck:
    """A Test of `target` as it stands; Http404 unless `job_id` is one."""
    access.require_site(by, "manage_storage_targets")
    tests = Job.objects.filter(operation=Operation.TEST_TARGET, params__target=target.pk)
    return _check_of(get_object_or_404(tests, pk=job_id))
