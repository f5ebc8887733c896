"""Protected VMs: the list, an item's page (recovery points, jobs, its protection card),
backup now, and repairing the backup extension."""

from datetime import date, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Max, OuterRef
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HTMX_STOP_POLLING

from inventory import services as inventory_services
from jobs import hook_details
from jobs.backup_queue import ON_DEMAND_DEFAULT_DAYS, backup_now, backup_refusal
from jobs.models import UNFINISHED
from portal.pages import PageRequest, apply_errors, count_of, done, error_text, render_page
from vaults import access
from vaults.forms import (
    STOP_MODE_HELP,
    BackupNowForm,
    PolicyChoiceForm,
    StopProtectionForm,
)
from vaults.models import (
    Health,
    ItemState,
    ProtectedVM,
    RecoveryPoint,
    StopMode,
    Vault,
    Verification,
    health_filter,
)
from vaults.protection import STOPPABLE, stop_modes
from vaults.views.common import item_of, item_url, vault_context
from vaults.views.recovery_points import item_zone, rp_context

RECENT_JOBS = 10


@login_required
def item_list(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    items = (
        vault.protected_items.select_related("vm", "vm__host", "policy")
        .annotate(
            rp_count=count_of(
                RecoveryPoint.objects.live().filter(protected_item=OuterRef("pk")),
                "protected_item",
            )
        )
        .order_by("vm__name")
    )
    # ?health= narrows the list to one `Health` (the overview's counts link here).
    health = request.GET.get("health", "")
    health_error = ""
    if health in Health.values:
        items = items.live().filter(health_filter(health))
    elif health:
        health_error = f"Unknown health {health[:40]!r}; use {', '.join(Health.values)}."
    context = vault_context(
        request,
        vault,
        "items",
        items=items,
        health=Health(health).label if health in Health.values else "",
        health_error=health_error,
    )
    return render(request, "vaults/item_list.html", context, status=400 if health_error else 200)


def item_context(
    request: PageRequest, vault: Vault, item: ProtectedVM, *, with_rps: bool = True, **extra: Any
) -> dict[str, Any]:
    """The protected VM page: its summary, the running job, recent jobs and one page of its
    recovery points by date. The live section's polls leave the recovery points out
    (`with_rps=False`): they are fetched again once, when a job ends."""
    rps = rp_context(request, item) if with_rps else {"rp_zone": str(item_zone(item).key)}
    jobs = list(item.jobs.select_related("created_by").order_by("-created_at", "-id")[:RECENT_JOBS])
    active = list(item.jobs.filter(status__in=UNFINISHED).order_by("-created_at", "-id"))
    caps = access.capabilities(request.user, vault)
    can_backup = caps["backup_now"] and backup_refusal(item, active) is None
    backup_form = extra.pop("backup_form", None)
    if can_backup and backup_form is None:
        backup_form = BackupNowForm(initial={"retain_until": _default_retain_until(item)})
    return vault_context(
        request,
        vault,
        "items",
        item=item,
        **rps,
        last_verified=RecoveryPoint.objects.filter(
            protected_item=item, verification=Verification.PASSED, verified_at__isnull=False
        ).aggregate(last=Max("verified_at"))["last"],
        jobs=jobs,
        active_jobs=active,
        backup_form=backup_form if can_backup else None,
        extension_message=hook_details.message(
            item.vm.extension_code,
            item.vm.extension_message,
            details=caps["view_hook_details"],
        ),
        **_protection(vault, item, caps, extra),
        **extra,
    )


def _protection(
    vault: Vault, item: ProtectedVM, caps: dict[str, bool], bound: dict[str, Any]
) -> dict[str, Any]:
    """The forms of the protection card, as far as the user's role and the item's state allow
    (a bound form with errors from a failed POST replaces its blank one)."""
    out: dict[str, Any] = {"stop_form": None, "resume_form": None, "policy_form": None}
    state = item.state
    policies = vault.policies.order_by("name")
    if caps["stop_protection"] and state in STOPPABLE:
        modes = stop_modes(vault)
        if state == ItemState.PROTECTION_STOPPED:
            modes = [m for m in modes if m != item.retention_mode]
        out["stop_form"] = bound.pop("stop_form", None) or StopProtectionForm()
        out["stop_modes"] = [(m, StopMode(m).label, STOP_MODE_HELP[m]) for m in modes]
        out["immutable"] = vault.is_immutable
    if caps["resume_protection"] and state == ItemState.PROTECTION_STOPPED:
        out["resume_form"] = bound.pop("resume_form", None) or PolicyChoiceForm(
            policies=policies, required=False
        )
    if caps["change_item_policy"] and state != ItemState.SOFT_DELETED:
        out["policy_form"] = bound.pop("policy_form", None) or PolicyChoiceForm(
            policies=policies, initial={"policy": item.policy.name}
        )
    out["can_undelete"] = caps["undelete"] and state == ItemState.SOFT_DELETED
    return out


def _default_retain_until(item: ProtectedVM) -> date:
    """Today in the policy's time zone (the zone the picked day is kept through) + 30 days."""
    today = timezone.now().astimezone(item_zone(item)).date()
    return today + timedelta(days=ON_DEMAND_DEFAULT_DAYS)


@login_required
def item_detail(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    """The page; its `live` section polls every 2 s while a job of the item is unfinished. A
    poll gets the live section and the summary (state, last backup, extension) out of band;
    once no job is unfinished it is answered with 286 (stop polling) and the `rps-changed`
    event, on which the recovery-point browser fetches itself once."""
    vault = access.get_vault(request.user, name, "view")
    item = item_of(vault, vm_name)
    context = item_context(request, vault, item, with_rps=not request.htmx)
    if not request.htmx:
        return render_page(request, "vaults/item_detail.html", context)
    finished = not context["active_jobs"]
    response = render_page(
        request,
        "vaults/item_detail.html",
        context,
        partial="poll",
        status=HTMX_STOP_POLLING if finished else 200,
    )
    if finished:
        response["HX-Trigger"] = "rps-changed"
    return response


@login_required
def item_backup_now(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    """Backup now: the job detail for a plain POST; htmx gets the item's live section back."""
    vault = access.get_vault(request.user, name, "backup_now")
    item = item_of(vault, vm_name)
    data = request.POST if request.method == "POST" else None
    form = BackupNowForm(data, initial={"retain_until": _default_retain_until(item)})
    if request.method == "POST" and form.is_valid():
        try:
            job = backup_now(
                item,
                by=request.user,
                request=request,
                retain_until=form.cleaned_data["retain_until"],
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            if request.htmx:
                context = item_context(request, vault, item, with_rps=False, started=job)
                return render_page(request, "vaults/item_detail.html", context, partial="poll")
            messages.success(request, f"Backup of {item.vm.name} started (job {job.pk}).")
            return redirect("job-detail", vault.name, job.pk)
    if request.htmx:  # htmx swaps 200s only: the errors come back inside the live section
        context = item_context(request, vault, item, with_rps=False, backup_form=form)
        return render_page(request, "vaults/item_detail.html", context, partial="poll")
    context = vault_context(request, vault, "items", item=item, form=form)
    status = 400 if request.method == "POST" else 200
    return render(request, "vaults/backup_now.html", context, status=status)


@login_required
@require_POST
def item_repair_extension(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "backup_now")
    item = item_of(vault, vm_name)
    try:
        inventory_services.repair_extension(item.vm, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(
            request,
            f"The backup extension of {item.vm.name} will be installed and validated again "
            "on its next backup.",
        )
    return done(request, item_url(vault, item))
