"""Recovering from a recovery point: restore it, or browse and download its files."""

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from jobs.anomaly import last_clean_before
from jobs.drill import request_drill
from jobs.restore import request_restore
from portal.pages import PageRequest, apply_errors, done, error_text, render_page
from security import alerts
from vaults import access, file_recovery
from vaults.file_recovery import display_name
from vaults.forms import RestoreForm
from vaults.models import FileRecoverySession, RecoveryPoint, Vault, lun_label
from vaults.views.common import rp_of, vault_context

# request_restore's error keys → the restore form's fields ("detail" goes above the form).
RESTORE_FIELDS = {
    "target.path": "path",
    "target.name": "name",
    "target.host": "host",
    "target": "path",
}


@login_required
def rp_restore(request: PageRequest, name: str, vm_name: str, rp_id: UUID) -> HttpResponse:
    vault = access.get_vault(request.user, name, "restore")
    rp = rp_of(vault, vm_name, rp_id)
    hosts = list(vault.linked_hosts.order_by("name"))
    selective = bool(rp.excluded_luns)
    initial: dict[str, Any] = {"host": hosts[0].pk} if len(hosts) == 1 else {}
    # The target directory starts at the first allowed root of the (first) host.
    first_roots = hosts[0].allowed_roots if hosts else []
    if first_roots:
        initial["path"] = first_roots[0]
    data = request.POST if request.method == "POST" else None
    form = RestoreForm(data, rp=rp, hosts=hosts, selective=selective, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = request_restore(rp, by=request.user, request=request, **form.request_args())
        except ValidationError as exc:
            apply_errors(form, exc, RESTORE_FIELDS)
        else:
            messages.success(request, f"Restore of {rp.protected_item.vm.name} queued.")
            return done(request, reverse("job-detail", args=[vault.name, job.pk]))
    context = vault_context(
        request,
        vault,
        "items",
        item=rp.protected_item,
        rp=rp,
        form=form,
        selective=selective,
        hosts=hosts,
        roots=[(h.name, root) for h in hosts for root in h.allowed_roots],
        disks=[{**d, "label": lun_label(d["lun"])} for d in rp.disks],
        last_clean=last_clean_before(rp.protected_item),
    )
    status = 400 if request.method == "POST" else 200
    return render(request, "vaults/rp_restore.html", context, status=status)


@login_required
@require_POST
def rp_drill(request: PageRequest, name: str, vm_name: str, rp_id: UUID) -> HttpResponse:
    """Run drill now: the drill job's page, or back to the RP with the reason it was refused."""
    vault = access.get_vault(request.user, name, "drill")
    rp = rp_of(vault, vm_name, rp_id)
    try:
        job = request_drill(rp, by=request.user, request=request, tier=request.POST.get("tier"))
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, reverse("rp-restore", args=[vault.name, vm_name, rp.pk]))
    messages.success(request, f"Restore drill of {rp} queued (job {job.pk}).")
    return done(request, reverse("job-detail", args=[vault.name, job.pk]))


# -- file recovery ----------------------------------------------------------------------------------


def _query(**params: str | int | None) -> str | None:
    """A query string of the non-empty params; None when a value cannot be sent as UTF-8
    (a file name that is not valid UTF-8 on ext4)."""
    try:
        return urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    except UnicodeEncodeError:
        return None


def _crumbs(path: str, disk: str, partition: str) -> list[tuple[str, str | None]]:
    crumbs = [("/", _query(disk=disk, partition=partition, path="/"))]
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        sub = "/" + "/".join(parts[: i + 1])
        crumbs.append((display_name(part), _query(disk=disk, partition=partition, path=sub)))
    return crumbs


def _expired_text(rp: RecoveryPoint, request: PageRequest) -> str:
    last = (
        FileRecoverySession.objects.filter(recovery_point=rp, user=request.user)
        .order_by("-created_at")
        .first()
    )
    if last is not None and last.ended_at is None and not last.is_open():
        return (
            f"Your file-recovery session expired at {last.expires_at:%Y-%m-%d %H:%M} UTC; "
            "open a new one to continue."
        )
    return ""


def _files_context(
    request: PageRequest,
    vault: Vault,
    rp: RecoveryPoint,
    session: FileRecoverySession | None,
    **extra: Any,
) -> dict[str, Any]:
    return vault_context(
        request,
        vault,
        "items",
        item=rp.protected_item,
        rp=rp,
        session=session,
        damage=alerts.open_damage_alert(rp),
        disks=[
            {**d, "label": lun_label(d["lun"]), "query": _query(disk=d["lun"])} for d in rp.disks
        ],
        **extra,
    )


def _listing(
    rp: RecoveryPoint, request: PageRequest, disk: str, partition: str, path: str
) -> dict[str, Any]:
    """What the file page lists: the disk's partitions to choose from, or one directory."""
    found: dict[str, Any] = {}
    if disk != "" and partition == "":
        parts = file_recovery.partitions(rp, request.user, disk)
        if parts:
            found["partitions"] = [
                {"part": p, "query": _query(disk=disk, partition=p.index)} for p in parts
            ]
    if disk != "" and not found:
        entries = file_recovery.list_dir(
            rp, request.user, disk=disk, partition=partition or None, path=path
        )
        found["crumbs"] = _crumbs(path, disk, partition)
        found["entries"] = [
            {
                "entry": e,
                "name": display_name(e.name),
                "browse": _query(disk=disk, partition=partition, path=e.path)
                if e.kind == "dir"
                else None,
                "download": _query(disk=disk, partition=partition, path=e.path)
                if e.kind in ("file", "dir")
                else None,
            }
            for e in sorted(entries, key=lambda e: (e.kind != "dir", e.name))
        ]
        found["here"] = _query(disk=disk, partition=partition, path=path)
    return found


@login_required
def rp_files(request: PageRequest, name: str, vm_name: str, rp_id: UUID) -> HttpResponse:
    """Browse a recovery point's files: pick a disk (and a partition), walk directories.

    Needs an open session of this user for this RP; without one the page offers to open it.
    """
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = rp_of(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is None:
        context = _files_context(request, vault, rp, None, expired=_expired_text(rp, request))
        return render(request, "vaults/rp_files.html", context)
    disk = request.GET.get("disk", "")
    partition = request.GET.get("partition", "")
    path = request.GET.get("path") or "/"
    browse: dict[str, Any] = {
        "disk": disk,
        "partition": partition,
        "path": path,
        "partitions": None,
        "entries": None,
        "error": "",
    }
    status = 200
    try:
        browse.update(_listing(rp, request, disk, partition, path))
    except ValidationError as exc:
        browse["error"] = error_text(exc)
        status = 200 if request.htmx else 400
    except file_recovery.Unreadable as exc:
        browse["error"] = str(exc)
        status = 200 if request.htmx else 409
    context = _files_context(request, vault, rp, session, browse=browse)
    return render_page(request, "vaults/rp_files.html", context, partial="listing", status=status)


def _files_url(vault: Vault, rp: RecoveryPoint) -> str:
    return reverse("rp-files", args=[vault.name, rp.protected_item.vm.name, rp.pk])


@login_required
@require_POST
def rp_files_session(request: PageRequest, name: str, vm_name: str, rp_id: UUID) -> HttpResponse:
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = rp_of(vault, vm_name, rp_id)
    if file_recovery.current_session(rp, request.user) is None:
        try:
            session = file_recovery.open_session(rp, by=request.user, request=request)
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(
                request,
                f"File-recovery session open until {session.expires_at:%Y-%m-%d %H:%M} UTC.",
            )
    return done(request, _files_url(vault, rp))


@login_required
@require_POST
def rp_files_session_end(
    request: PageRequest, name: str, vm_name: str, rp_id: UUID
) -> HttpResponse:
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = rp_of(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is not None:
        file_recovery.end_session(session, by=request.user, request=request)
        messages.success(request, "File-recovery session ended.")
    return done(request, _files_url(vault, rp))


def safe_filename(name: str) -> str:
    """A download name without path separators or control characters, valid UTF-8."""
    name = display_name(name)
    name = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in name)
    return name.strip(" .") or "download"


@login_required
def rp_files_download(
    request: PageRequest, name: str, vm_name: str, rp_id: UUID
) -> HttpResponseBase:
    """A file as it is, or a folder as a zip, streamed (RFC 6266/5987 file name)."""
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = rp_of(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is None:
        expired = _expired_text(rp, request) or (
            "No open file-recovery session for this recovery point; open one first."
        )
        context = _files_context(request, vault, rp, None, expired=expired)
        return render(request, "vaults/rp_files.html", context, status=403)
    path = request.GET.get("path") or ""
    try:
        download = file_recovery.download(
            rp,
            request.user,
            disk=request.GET.get("disk"),
            partition=request.GET.get("partition") or None,
            path=path,
            request=request,
        )
    except (ValidationError, file_recovery.Unreadable) as exc:
        # The download links are plain links: this page replaces the one the user was on.
        if isinstance(exc, file_recovery.Unreadable):
            text, status = str(exc), 409
        else:
            text, status = error_text(exc), 400
        browse = {"error": text, "disk": request.GET.get("disk", "")}
        context = _files_context(request, vault, rp, session, browse=browse)
        return render(request, "vaults/rp_files.html", context, status=status)
    return download.response(safe_filename(download.name))
