"""Job pages: the vault's job list (filtered by status and operation) and one job's detail.

The detail's progress fragment polls every 2 s while the job runs; once it is finished the
view answers 286, which tells htmx to stop polling.
"""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404
from django_htmx.http import HTMX_STOP_POLLING

from jobs.models import Job, Operation, Status
from portal.views import render_page
from vaults import access
from vaults.views import vault_context

PAGE_SIZE = 50


@login_required
def job_list(request, name):
    vault = access.get_vault(request.user, name, "view")
    jobs = Job.objects.visible_to(request.user).filter(vault=vault).select_related("created_by")
    status = request.GET.get("status", "")
    operation = request.GET.get("operation", "")
    if status in Status.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    if operation in Operation.values:
        jobs = jobs.filter(operation=operation)
    else:
        operation = ""
    page = Paginator(jobs.order_by("-created_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    query = "&".join(f"{k}={v}" for k, v in (("status", status), ("operation", operation)) if v)
    context = vault_context(
        request,
        vault,
        "jobs",
        page=page,
        jobs=page.object_list,
        status=status,
        operation=operation,
        statuses=Status.choices,
        operations=Operation.choices,
        query=query,
    )
    return render_page(request, "jobs/job_list.html", context, partial="job-table")


@login_required
def job_detail(request, name, job_id):
    vault = access.get_vault(request.user, name, "view")
    job = get_object_or_404(
        Job.objects.visible_to(request.user)
        .filter(vault=vault)
        .select_related("protected_item__vm", "recovery_point", "created_by")
        .prefetch_related("subtasks"),
        pk=job_id,
    )
    context = vault_context(request, vault, "jobs", job=job)
    status = HTMX_STOP_POLLING if request.htmx and job.is_finished else 200
    return render_page(request, "jobs/job_detail.html", context, partial="progress", status=status)
