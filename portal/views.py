"""Dashboard, API tokens, and the small helpers every page view uses.

Pages work as full pages first; htmx only swaps fragments (`render_page` picks the named
partial when the request comes from htmx).
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from jobs.models import Job, Status
from portal.forms import TokenForm
from portal.models import ApiToken
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault

# -- helpers ------------------------------------------------------------------------------------


def render_page(request, template: str, context: dict, *, partial: str | None = None, status=200):
    """The whole page, or only its named partial when htmx asks."""
    if partial and request.htmx:
        template = f"{template}#{partial}"
    return render(request, template, context, status=status)


def done(request, url: str):
    """Where a successful POST goes: a redirect, or a client-side redirect for htmx."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def apply_errors(form, exc: ValidationError, field_map: dict[str, str] | None = None) -> None:
    """Put a service's ValidationError onto the form: each message next to its field."""
    field_map = field_map or {}
    if not hasattr(exc, "error_dict"):
        for message in exc.messages:
            form.add_error(None, message)
        return
    for key, errors in exc.error_dict.items():
        field = field_map.get(key, key)
        for error in errors:
            for message in error.messages:
                form.add_error(field if field in form.fields else None, message)


def error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def approval_pending(request, exc):
    """A critical operation waits for a guard approver (MUA): say so and show the request.

    The request is written again if an enclosing transaction rolled it back.
    """
    approval = exc.persist()
    url = reverse("approval-detail", args=[approval.vault.name, approval.pk])
    messages.warning(
        request,
        format_html(
            'Waiting for approval <a href="{}">#{}</a> by a guard approver. {}',
            url,
            approval.pk,
            exc.text,
        ),
    )
    return done(request, url)


def count_of(qs, field: str = "pk") -> Subquery:
    """A correlated COUNT(*) subquery, so a list annotates counts without joining rows."""
    sub = qs.order_by().values(field).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(sub, output_field=IntegerField()), 0)


# -- dashboard ----------------------------------------------------------------------------------


def live_items():
    return ProtectedVM.objects.exclude(state=ItemState.SOFT_DELETED)


def live_rps():
    return RecoveryPoint.objects.filter(soft_deleted_at__isnull=True)


def annotate_vault_counts(vaults):
    return vaults.annotate(
        item_count=count_of(live_items().filter(vault=OuterRef("pk")), "vault"),
        rp_count=count_of(live_rps().filter(vault=OuterRef("pk")), "vault"),
    )


@login_required
def dashboard(request):
    user = request.user
    vaults = list(annotate_vault_counts(access.visible(Vault.objects.all(), user)))
    since = timezone.now() - timedelta(hours=24)
    by_status = dict(
        access.visible(Job.objects.all(), user)
        .filter(created_at__gte=since)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    job_counts = [(value, label, by_status.get(value, 0)) for value, label in Status.choices]
    context = {
        "vaults": vaults,
        "item_total": sum(v.item_count for v in vaults),
        "rp_total": sum(v.rp_count for v in vaults),
        "job_counts": job_counts,
        "job_total": sum(by_status.values()),
    }
    return render(request, "portal/dashboard.html", context)


# -- API tokens ---------------------------------------------------------------------------------


def _tokens(user):
    return ApiToken.objects.filter(user=user)


@login_required
def tokens(request):
    form = TokenForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        token, new_key = ApiToken.issue(request.user, form.cleaned_data["name"])
        audit.record("token.create", actor=request.user, request=request, obj=token)
        form = TokenForm()
    context = {
        "form": form,
        "tokens": _tokens(request.user).filter(Q(revoked_at__isnull=True)),
        "revoked": _tokens(request.user).filter(revoked_at__isnull=False)[:20],
        "new_key": new_key,
    }
    return render(request, "portal/tokens.html", context)


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(_tokens(request.user), pk=pk)
    if not token.is_active:
        raise Http404("No such token.")
    token.revoke()
    audit.record("token.revoke", actor=request.user, request=request, obj=token)
    messages.success(request, f"Token {token.name} revoked.")
    return done(request, reverse("account-tokens"))
