"""Security pages: MUA approvals, alerts, the audit log and customer-managed keys.

They ask the same questions as the REST API (`security/api/views.py`): approvals through
`security.mua` (guard approvers are not members: the vault is resolved here, not by
`access.get_vault`), alerts and audit through `vaults.access`, keys through `require_site`.
Every change is made by the domain functions (`mua.approve`, `alerts.acknowledge`,
`keys.rotate_key`, …), which check the role again.
"""

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST
from rest_framework import serializers

from jobs.models import Job
from portal.pages import PageRequest, apply_errors, done, error_text, render_page
from security import alerts, keys, mua, second_factor
from security.audit_log import AuditFilterSerializer, SiteAuditFilterSerializer, filter_audit
from security.models import Alert, AlertStatus, Approval, ApprovalStatus, CustomerKey, VaultKey
from vaults import access
from vaults.models import AuditEvent, Vault
from vaults.views.common import vault_context

PAGE_SIZE = 50


def _page(request: HttpRequest, qs: QuerySet[Any]) -> Page[Any]:
    return Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))


def _back(request: HttpRequest, fallback: str) -> str:
    """Where an action returns: `next` when it is a URL of this site, else `fallback`."""
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, {request.get_host()}, request.is_secure()):
        return nxt
    return fallback


# -- approvals -----------------------------------------------------------------------------------

APPROVAL_STATUSES = ApprovalStatus.choices


def _approval_vault(name: str) -> Vault:
    vault = Vault.objects.filter(name=name).first()
    if vault is None:
        raise Http404("No such vault.")
    return vault


def _require_view(user: User, vault: Vault) -> bool:
    """`mua.require_view_approvals`, asking whether the user guards the vault only once."""
    guard = mua.is_guard(user, vault)
    if not guard:
        mua.require_view_approvals(user, vault)
    return guard


def _approval_context(
    request: PageRequest, vault: Vault, guard: bool, **extra: object
) -> dict[str, Any]:
    """Members get the vault's tabs; a guard approver who is not a member sees only this."""
    context = vault_context(request, vault, "approvals", guard=guard, **extra)
    context["guard_only"] = not context["caps"]["view"]
    return context


def _decorate(approvals: list[Approval], user: User, guard: bool, now: datetime) -> list[Approval]:
    for a in approvals:
        a.shown_status = a.current_status(now)
        a.can_decide = (
            guard and a.shown_status == ApprovalStatus.PENDING and a.requested_by_id != user.pk
        )
        a.own = a.requested_by_id == user.pk
    if any(a.can_decide for a in approvals):
        # Approving asks an approver with a second factor for a fresh code.
        needs_code = second_factor.has_second_factor(user)
        for a in approvals:
            a.needs_code = needs_code
    return approvals


def _status_filter(qs: QuerySet[Approval], wanted: str, now: datetime) -> QuerySet[Approval]:
    if wanted == ApprovalStatus.PENDING:
        return qs.filter(status=ApprovalStatus.PENDING, expires_at__gt=now)
    if wanted == ApprovalStatus.EXPIRED:
        return qs.filter(status__in=[ApprovalStatus.PENDING, ApprovalStatus.EXPIRED]).exclude(
            status=ApprovalStatus.PENDING, expires_at__gt=now
        )
    if wanted in ApprovalStatus.values:
        return qs.filter(status=wanted)
    return qs


@login_required
def approval_list(request: PageRequest, name: str) -> HttpResponse:
    """The vault's approval requests: contributor+ members and the vault's guard approvers."""
    vault = _approval_vault(name)
    guard = _require_view(request.user, vault)
    now = timezone.now()
    status = request.GET.get("status", "")
    status = status if status in ApprovalStatus.values else ""
    qs = _status_filter(
        Approval.objects.filter(vault=vault).select_related("vault", "decided_by"), status, now
    )
    page = _page(request, qs)
    context = _approval_context(request, vault, guard, page=page, status=status)
    context["approvals"] = _decorate(list(page.object_list), request.user, context["guard"], now)
    context["statuses"] = APPROVAL_STATUSES
    context["query"] = urlencode({"status": status}) if status else ""
    return render_page(request, "security/approval_list.html", context, partial="approval-table")


def _approval(vault: Vault, approval_id: int) -> Approval:
    approval = (
        Approval.objects.filter(vault=vault, pk=approval_id)
        .select_related("vault", "decided_by")
        .first()
    )
    if approval is None:
        raise Http404("No such approval request.")
    return approval


@login_required
def approval_detail(request: PageRequest, name: str, approval_id: int) -> HttpResponse:
    vault = _approval_vault(name)
    guard = _require_view(request.user, vault)
    approval = _approval(vault, approval_id)
    context = _approval_context(request, vault, guard)
    context["approval"] = _decorate([approval], request.user, context["guard"], timezone.now())[0]
    return render(request, "security/approval_detail.html", context)


def _decide(
    request: PageRequest,
    name: str,
    approval_id: int,
    decide: Callable[..., Approval],
    verb: str,
) -> HttpResponse:
    vault = _approval_vault(name)
    # As the API: nobody who neither guards nor sees the vault learns it exists (404);
    # mua.require_decide answers 403 to members and to the requester.
    if not mua.is_guard(request.user, vault) and access.role_of(request.user, vault) is None:
        raise Http404("No such vault.")
    approval = _approval(vault, approval_id)
    note = request.POST.get("note", "")[:500]
    url = reverse("approval-detail", args=[vault.name, approval.pk])
    extra = {"otp": request.POST.get("otp", "")} if decide is mua.approve else {}
    try:
        decided = decide(approval, by=request.user, request=request, note=note, **extra)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, url)
    if decided.status == ApprovalStatus.EXECUTED:
        messages.success(
            request,
            f"Approval request {decided.pk} approved: the operation ran on behalf of "
            f"{decided.requested_by_name}.",
        )
    else:
        messages.success(request, f"Approval request {decided.pk} {verb}.")
    return done(request, _back(request, url))


@login_required
@require_POST
def approval_approve(request: PageRequest, name: str, approval_id: int) -> HttpResponse:
    return _decide(request, name, approval_id, mua.approve, "approved")


@login_required
@require_POST
def approval_reject(request: PageRequest, name: str, approval_id: int) -> HttpResponse:
    return _decide(request, name, approval_id, mua.reject, "rejected")


@login_required
def my_approvals(request: PageRequest) -> HttpResponse:
    """Pending requests of the vaults the user guards (the guard approver's inbox)."""
    now = timezone.now()
    qs = (
        Approval.objects.filter(
            vault__in=access.approvable_vault_ids(request.user),
            status=ApprovalStatus.PENDING,
            expires_at__gt=now,
        )
        .select_related("vault", "decided_by")
        .order_by("-requested_at", "-id")
    )
    page = _page(request, qs)
    approvals = _decorate(list(page.object_list), request.user, True, now)
    return render(request, "security/my_approvals.html", {"page": page, "approvals": approvals})


# -- alerts ----------------------------------------------------------------------------------------


def _alert_rows(qs: Iterable[Alert], user: User) -> list[Alert]:
    rows = list(qs)
    for a in rows:
        a.can_ack = a.status == AlertStatus.ACTIVE and access.can(
            user, a.vault, "acknowledge_alert"
        )
        a.can_resolve = a.status != AlertStatus.RESOLVED and access.can(
            user, a.vault, "resolve_alert"
        )
        a.title = alerts.title(a.kind)
    return rows


def _alert_status(request: HttpRequest) -> str:
    status = request.GET.get("status", "open")
    return status if status in ("open", "all", *AlertStatus.values) else "open"


def _filter_alerts(qs: QuerySet[Alert], status: str) -> QuerySet[Alert]:
    if status == "open":
        return qs.exclude(status=AlertStatus.RESOLVED)
    if status in AlertStatus.values:
        return qs.filter(status=status)
    return qs


ALERT_FILTERS = [("open", "Open"), *AlertStatus.choices, ("all", "All")]


@login_required
def alert_list(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    status = _alert_status(request)
    qs = _filter_alerts(
        Alert.objects.filter(vault=vault).select_related("vault", "acknowledged_by", "resolved_by"),
        status,
    )
    page = _page(request, qs)
    context = vault_context(
        request,
        vault,
        "alerts",
        page=page,
        alerts=_alert_rows(page.object_list, request.user),
        status=status,
        filters=ALERT_FILTERS,
        query=urlencode({"status": status}),
        job_alerts=alerts.job_alerts_enabled(vault),
        here=request.get_full_path(),
    )
    return render_page(request, "security/alert_list.html", context, partial="alert-table")


@login_required
def site_alerts(request: PageRequest) -> HttpResponse:
    """Alerts of every vault the user sees."""
    status = _alert_status(request)
    qs = _filter_alerts(
        access.visible(Alert.objects.all(), request.user).select_related(
            "vault", "acknowledged_by", "resolved_by"
        ),
        status,
    )
    page = _page(request, qs)
    context = {
        "page": page,
        "alerts": _alert_rows(page.object_list, request.user),
        "status": status,
        "filters": ALERT_FILTERS,
        "query": urlencode({"status": status}),
        "here": request.get_full_path(),
    }
    return render_page(request, "security/site_alerts.html", context, partial="alert-table")


def _alert(vault: Vault, alert_id: int) -> Alert:
    alert = Alert.objects.filter(vault=vault, pk=alert_id).select_related("vault").first()
    if alert is None:
        raise Http404("No such alert.")
    return alert


def _alert_action(
    request: PageRequest,
    name: str,
    alert_id: int,
    action: str,
    operation: Callable[..., Alert],
    verb: str,
) -> HttpResponse:
    vault = access.get_vault(request.user, name, action)
    alert = _alert(vault, alert_id)
    try:
        operation(alert, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Alert {alert.pk} {verb}.")
    return done(request, _back(request, reverse("alert-list", args=[vault.name])))


@login_required
@require_POST
def alert_acknowledge(request: PageRequest, name: str, alert_id: int) -> HttpResponse:
    return _alert_action(
        request, name, alert_id, "acknowledge_alert", alerts.acknowledge, "acknowledged"
    )


@login_required
@require_POST
def alert_resolve(request: PageRequest, name: str, alert_id: int) -> HttpResponse:
    return _alert_action(request, name, alert_id, "resolve_alert", alerts.resolve, "resolved")


@login_required
@require_POST
def alert_settings(request: PageRequest, name: str) -> HttpResponse:
    """The vault's Sev-1 job-alert switch (security alerts cannot be turned off)."""
    vault = access.get_vault(request.user, name, "change_settings")
    enabled = request.POST.get("job_alerts") in ("on", "true", "1")
    alerts.update_settings(vault, by=request.user, request=request, job_alerts=enabled)
    messages.success(request, f"Job alerts turned {'on' if enabled else 'off'}.")
    return done(request, reverse("alert-list", args=[vault.name]))


# -- audit log ----------------------------------------------------------------------------------------


def _audit_page(
    request: HttpRequest,
    base: QuerySet[AuditEvent],
    filters: type[AuditFilterSerializer],
) -> dict[str, Any]:
    params = {k: request.GET.get(k, "").strip() for k in filters().fields.keys()}
    error = ""
    try:
        qs = filter_audit(base, params, filters)
    except serializers.ValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        error = " ".join(str(m) for msgs in detail.values() for m in msgs)
        qs = base.none()
    query = urlencode({k: v for k, v in params.items() if v})
    page = _page(request, qs)
    return {"page": page, "events": page.object_list, "f": params, "query": query, "error": error}


@login_required
def vault_audit(request: PageRequest, name: str) -> HttpResponse:
    """The vault's audit log (owners and site admins)."""
    vault = access.get_vault(request.user, name, "view_audit")
    context = vault_context(
        request,
        vault,
        "audit",
        **_audit_page(request, AuditEvent.objects.filter(vault=vault), AuditFilterSerializer),
    )
    export = reverse("api-vault-audit-export", kwargs={"vault_name": vault.name})
    context["export_url"] = f"{export}?{context['query']}" if context["query"] else export
    context["action_url"] = reverse("vault-audit", args=[vault.name])
    return render_page(request, "security/audit_list.html", context, partial="audit-table")


@login_required
def site_audit(request: PageRequest) -> HttpResponse:
    """Every vault's audit log and site-wide events (site admins)."""
    access.require_site(request.user, "view_site_audit")
    context = _audit_page(request, AuditEvent.objects.all(), SiteAuditFilterSerializer)
    export = reverse("api-audit-export")
    context["export_url"] = f"{export}?{context['query']}" if context["query"] else export
    context["action_url"] = reverse("site-audit")
    context["site"] = True
    return render_page(request, "security/audit_list.html", context, partial="audit-table")


# -- customer-managed keys --------------------------------------------------------------------------


class KeyRegisterForm(forms.Form):
    name = forms.CharField(max_length=50, help_text="2–50 characters: a letter first.")
    path = forms.CharField(
        max_length=500,
        label="Key file",
        help_text="Absolute path of the key file on the server (32 raw bytes).",
    )


def _keys() -> QuerySet[CustomerKey]:
    return CustomerKey.objects.prefetch_related(
        Prefetch("assignments", queryset=VaultKey.objects.select_related("vault"))
    ).order_by("name")


@login_required
def key_list(request: PageRequest) -> HttpResponse:
    access.require_site(request.user, "manage_keys")
    form = KeyRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = keys.register_key(by=request.user, request=request, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Key {key.name} registered.")
            return done(request, reverse("key-list"))
    status = 400 if form.errors else 200
    return render(request, "security/key_list.html", {"form": form, "keys": _keys()}, status=status)


def _key(name: str) -> CustomerKey:
    key = CustomerKey.objects.filter(name=name).first()
    if key is None:
        raise Http404("No such key.")
    return key


@login_required
@require_POST
def key_enabled(request: PageRequest, key_name: str) -> HttpResponse:
    access.require_site(request.user, "manage_keys")
    key = _key(key_name)
    enabled = request.POST.get("enabled") in ("on", "true", "1")
    keys.set_key_enabled(key, enabled, by=request.user, request=request)
    messages.success(request, f"Key {key.name} {'enabled' if enabled else 'disabled'}.")
    return done(request, reverse("key-list"))


def _job_link(job: Job) -> tuple[str, int, str]:
    """The URL, id and vault name of a vault's job."""
    vault = job.vault
    assert vault is not None  # rotate_key queues one job per vault
    return reverse("job-detail", args=[vault.name, job.pk]), job.pk, vault.name


@login_required
@require_POST
def key_rotate(request: PageRequest, key_name: str) -> HttpResponse:
    access.require_site(request.user, "manage_keys")
    key = _key(key_name)
    path = request.POST.get("path", "").strip()
    try:
        jobs = keys.rotate_key(key, by=request.user, request=request, path=path)
    except (ValidationError, PermissionDenied) as exc:
        text = error_text(exc) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Key {key.name} was not rotated: {text}")
        return done(request, reverse("key-list"))
    links = format_html_join(
        ", ",
        '<a href="{}">job {} ({})</a>',
        (_job_link(job) for job in jobs),
    )
    if jobs:
        messages.success(
            request,
            format_html(
                "Key {} rotated to version {}; re-wrapping: {}.", key.name, key.version, links
            ),
        )
    else:
        messages.success(
            request, f"Key {key.name} rotated to version {key.version}; no vault uses it."
        )
    return done(request, reverse("key-list"))
