"""Policy pages: the vault's policy list, create/edit with inline validation, delete."""

import hashlib
import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import OuterRef
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from policies.forms import PolicyForm
from policies.models import BackupPolicy
from policies.spec import DAY_NAMES, default_policy, retention_summary
from portal.pages import PageRequest, count_of, done, error_text, live_items, render_page
from vaults import access
from vaults.models import Vault
from vaults.services.policies import (
    check_policy,
    create_policy,
    delete_policy,
    preview_policy_update,
    update_policy,
)
from vaults.services.simulation import calendar_weeks, simulate
from vaults.views.common import vault_context

# A POST carrying this parameter only validates: the form partial comes back, nothing is saved.
VALIDATE_ONLY = "_validate"
# A change that shortens retention is saved only with this parameter, after the page showed
# which recovery points expire earlier and when; its value names the very change shown, so a
# policy edited again after the preview is previewed again.
CONFIRM_CUT = "confirm_cut"


def cut_token(rep: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def schedule_summary(schedule: dict[str, Any]) -> str:
    frequency = schedule.get("frequency")
    if frequency == "daily":
        return f"Daily at {schedule['time']}"
    if frequency == "weekly":
        days = ", ".join(DAY_NAMES.get(d, d) for d in schedule["weekdays"])
        return f"Weekly on {days} at {schedule['time']}"
    if frequency == "hourly":
        return (
            f"Every {schedule['interval_hours']} h from {schedule['window_start']} "
            f"for {schedule['window_hours']} h"
        )
    return "—"


@login_required
def policy_list(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    # Each with its item count and, for the template, its schedule and retention in words.
    policies: list[Any] = list(
        vault.policies.annotate(
            item_count=count_of(live_items().filter(policy=OuterRef("pk")), "policy")
        ).order_by("name")
    )
    for policy in policies:
        policy.schedule_text = schedule_summary(policy.schedule)
        policy.retention_text = retention_summary(policy.representation())
    context = vault_context(request, vault, "policies", policies=policies)
    return render_page(request, "policies/policy_list.html", context)


def _policy_form_page(
    request: PageRequest, vault: Vault, policy: BackupPolicy | None = None
) -> HttpResponse:
    """Create (policy None) or edit: validate inline on htmx change, save on submit. An edit
    that shortens retention first shows what it cuts and asks to confirm."""
    cut: dict[str, Any] | None = None
    if request.method == "POST":
        form = PolicyForm(request.POST)
        form.is_valid()
        rep = form.representation()
        validate_only = VALIDATE_ONLY in request.POST
        if validate_only or form.errors:
            form.add_policy_errors(check_policy(vault, rep, by=request.user, policy=policy))
        else:
            try:
                if policy is None:
                    policy = create_policy(vault, rep, by=request.user, request=request)
                    messages.success(request, f"Policy {policy.name} created.")
                else:
                    preview = preview_policy_update(policy, rep, by=request.user)
                    shortens = preview["reductions"] or preview["expiring"]
                    if shortens and request.POST.get(CONFIRM_CUT) != cut_token(rep):
                        cut = {**preview, "token": cut_token(rep)}
                    else:
                        policy = update_policy(policy, rep, by=request.user, request=request)
                        messages.success(request, f"Policy {policy.name} saved.")
            except ValidationError as exc:
                form.add_policy_errors(exc.message_dict)
            else:
                if cut is None:
                    return done(request, reverse("policy-list", args=[vault.name]))
        if validate_only:
            form.validated = not form.errors  # type: ignore[attr-defined]  # shown by the template
    else:
        rep = policy.representation() if policy else {**default_policy(), "name": ""}
        form = PolicyForm(initial=PolicyForm.initial_from(rep))
    context = vault_context(
        request, vault, "policies", form=form, policy=policy, cut=cut, cut_field=CONFIRM_CUT
    )
    return render_page(request, "policies/policy_form.html", context, partial="policy-form")


@login_required
def policy_create(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "manage_policies")
    return _policy_form_page(request, vault)


@login_required
def policy_edit(request: PageRequest, name: str, policy: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "manage_policies")
    return _policy_form_page(request, vault, get_object_or_404(vault.policies, name=policy))


@login_required
@require_POST
def policy_delete(request: PageRequest, name: str, policy: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "manage_policies")
    doomed = get_object_or_404(vault.policies, name=policy)
    try:
        delete_policy(doomed, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Policy {doomed.name} deleted.")
    return done(request, reverse("policy-list", args=[vault.name]))


@login_required
@require_POST
def policy_simulate(request: PageRequest, name: str) -> HttpResponse:
    """The policy editor's simulation of the form as it stands (nothing is saved): a calendar
    of the points it makes and keeps, storage, and for an edit the points cut earlier. htmx
    swaps it into the editor; a plain POST (a confirmation's button without script) gets it
    as a page of its own."""
    vault = access.get_vault(request.user, name, "view")
    form = PolicyForm(request.POST)
    form.is_valid()
    months = request.POST.get("months", "3")
    editing = request.POST.get("editing") or None
    context = vault_context(request, vault, "policies", editing=editing)
    try:
        sim = simulate(
            vault,
            draft=form.representation(),
            name=editing,
            months=int(months) if months.isdigit() else -1,
        )
    except ValidationError as exc:
        context["error"] = error_text(exc)
    else:
        # The existing policy the draft changes (named only once the simulation found it).
        context.update(sim=sim, weeks=calendar_weeks(sim), base=editing)
    page = "policies/_simulation.html" if request.htmx else "policies/simulation.html"
    return render_page(request, page, context)
