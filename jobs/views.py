"""Job pages: the vault's job list (last 7 days by default; status, operation and VM filters)
and one job's detail, plus cancelling a job.

Both poll while something they show is unfinished (the list every 2 s, the detail every 1 s);
once nothing is, the view answers 286, which tells htmx to stop polling.
"""

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST
from django_htmx.http import HTMX_STOP_POLLING

from inventory.models import Host, VirtualMachine
from jobs import hook_details
from jobs.models import Job, Operation, Param, RestoreKind, Status
from jobs.progress import phase_words
from jobs.runner import JobFinished, cancel_job
from portal.pages import PageRequest, done, error_text, render_page
from vaults import access
from vaults.models import RPConsistency
from vaults.views.common import vault_context

PAGE_SIZE = 50
DAYS = [(1, "24 hours"), (7, "7 days"), (30, "30 days"), (90, "90 days"), (0, "All time")]
DEFAULT_DAYS = 7


def _days(value: str | None) -> int:
    try:
        days = int(value or "")
    except ValueError:
        return DEFAULT_DAYS
    return days if days in dict(DAYS) else DEFAULT_DAYS


@login_required
def job_list(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    vault_jobs = access.visible(Job.objects.all(), request.user).filter(vault=vault)
    jobs = vault_jobs.select_related("created_by")
    status = request.GET.get("status", "")
    operation = request.GET.get("operation", "")
    vm = request.GET.get("vm", "")
    days = _days(request.GET.get("days"))
    if days:
        jobs = jobs.filter(created_at__gte=timezone.now() - timedelta(days=days))
    if status in Status.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    if operation in Operation.values:
        jobs = jobs.filter(operation=operation)
    else:
        operation = ""
    if vm:
        jobs = jobs.filter(vm_name=vm)
    page = Paginator(jobs.order_by("-created_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    filters: dict[str, str | int] = {"status": status, "operation": operation, "vm": vm}
    filters["days"] = days if days != DEFAULT_DAYS else ""
    query = urlencode({k: v for k, v in filters.items() if v != ""})
    vm_names = (
        vault_jobs.exclude(vm_name="").order_by("vm_name").values_list("vm_name", flat=True)
    ).distinct()
    live = any(not job.is_finished for job in page.object_list)
    context = vault_context(
        request,
        vault,
        "jobs",
        page=page,
        jobs=page.object_list,
        status=status,
        operation=operation,
        vm=vm,
        days=days,
        day_choices=DAYS,
        vm_names=vm_names,
        statuses=Status.choices,
        operations=Operation.choices,
        query=query,
        live=live,
        here=request.get_full_path(),
    )
    # Only the table's own polling asks with poll=1; a filter change must always swap.
    stop = request.htmx and request.GET.get("poll") and not live
    status_code = HTMX_STOP_POLLING if stop else 200
    return render_page(
        request, "jobs/job_list.html", context, partial="job-table", status=status_code
    )


def _rates(job: Job) -> dict[str, Any]:
    """Throughput of the running phase (bytes done / its elapsed time) and the time left."""
    if job.is_finished or not job.bytes_done:
        return {}
    running = [t for t in job.subtasks.all() if t.status == Status.IN_PROGRESS and t.started_at]
    since = running[-1].started_at if running else job.started_at
    if since is None:
        return {}
    elapsed = (timezone.now() - since).total_seconds()
    if elapsed <= 0:
        return {}
    rate = job.bytes_done / elapsed
    left = max(job.bytes_total - job.bytes_done, 0)
    return {"rate": rate, "eta": timedelta(seconds=round(left / rate)) if rate else None}


def _percent(done: int, total: int) -> int:
    return min(100, int(done * 100 / total)) if total else 0


def _disk_progress(progress: dict[str, Any]) -> dict[str, Any]:
    """Per-disk bars for every phase the job ran or will run, in the job's order: one row per
    disk, one column per phase ("—" for a phase that has not reported yet)."""
    phases: dict[str, Any] = progress.get("phases") or {}
    names = [str(p) for p, _ in progress.get("plan") or []]
    names += [p for p in phases if p not in names]
    if not phases and progress.get("disks"):  # a job recorded before phases were kept
        names = [progress.get("phase", "")]
        phases = {names[0]: {"disks": progress["disks"]}}
    luns = sorted({d["lun"] for p in phases.values() for d in p.get("disks") or []})
    rows = []
    for lun in luns:
        cells = []
        for name in names:
            disk = next(
                (d for d in (phases.get(name) or {}).get("disks") or [] if d["lun"] == lun), None
            )
            cells.append(
                None if disk is None else {**disk, "percent": _percent(disk["done"], disk["total"])}
            )
        rows.append({"lun": lun, "cells": cells})
    return {"disk_phases": [phase_words(n) for n in names], "disk_rows": rows}


def _restore_details(job: Job) -> dict[str, Any]:
    """What a restore wrote and where: kind, source tier, target host and directory, files,
    and the VM it created."""
    params, result = job.params or {}, job.result or {}
    host_id = params.get(Param.HOST)
    host = (
        Host.objects.filter(pk=host_id).values_list("name", flat=True).first()
        if isinstance(host_id, int)
        else None
    )
    files = result.get("targets") or params.get(Param.FILES) or {}
    new_vm = None
    if result.get("new_vm"):
        new_vm = (
            VirtualMachine.objects.filter(pk=result["new_vm"])
            .values_list("name", flat=True)
            .first()
        )
    return {
        "kind": params.get(Param.KIND, ""),
        "tier": params.get(Param.TIER, ""),
        "host": host or "",
        "directory": params.get(Param.PATH, ""),
        "files": sorted(((int(k), v) for k, v in files.items()), key=lambda x: x[0]),
        "new_vm": new_vm
        or (params.get(Param.NAME) if params.get(Param.KIND) == RestoreKind.CREATE_VM else None),
        "new_vm_created": bool(new_vm),
        "safety_rp": result.get("safety_recovery_point"),
        "bytes_written": result.get("bytes_written"),
    }


@login_required
def job_detail(request: PageRequest, name: str, job_id: int) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    job = get_object_or_404(
        access.visible(Job.objects.all(), request.user)
        .filter(vault=vault)
        .select_related("protected_item__vm", "recovery_point", "created_by")
        .prefetch_related("subtasks"),
        pk=job_id,
    )
    result = job.result or {}
    progress = result.get("progress") or {}
    details = access.can(request.user, vault, "view_hook_details")
    shown = hook_details.warnings(job.warnings, details=details)
    context = vault_context(
        request,
        vault,
        "jobs",
        job=job,
        result=result,
        error_message=hook_details.message(job.error_code, job.error_message, details=details),
        phase=phase_words(progress.get("phase", "")) if progress.get("phase") else "",
        **_disk_progress(progress),
        restore=_restore_details(job) if job.operation == Operation.RESTORE else None,
        transfer=result.get("transfer") or {},
        consistencies=RPConsistency.choices,
        loud_warnings=[w for w in shown if w.get("code") == "thaw_failed"],
        warnings=[w for w in shown if w.get("code") != "thaw_failed"],
        **_rates(job),
    )
    status = HTMX_STOP_POLLING if request.htmx and job.is_finished else 200
    return render_page(request, "jobs/job_detail.html", context, partial="progress", status=status)


@login_required
@require_POST
def job_cancel(request: PageRequest, name: str, job_id: int) -> HttpResponse:
    vault = access.get_vault(request.user, name, "cancel_job")
    job = get_object_or_404(Job.objects.filter(vault=vault), pk=job_id)
    before = job.status
    try:
        cancel_job(job, by=request.user, request=request)
    except JobFinished as e:
        messages.error(request, error_text(e))
    else:
        if job.status == before:
            messages.info(request, f"Job {job.pk} is already {job.get_status_display().lower()}.")
        elif job.status == Status.CANCELLED:
            messages.success(request, "Job cancelled.")
        else:
            messages.success(request, "Cancelling: the job stops at its next check.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("job-detail", args=[vault.name, job.pk])
    return done(request, back)
