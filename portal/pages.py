"""What every page view shares: the request it gets, the whole page or only a fragment,
where a successful POST goes, a service's errors on the form, a pending MUA approval, and
counts of rows for lists.

Pages work as full pages first; htmx only swaps fragments (`render_page` picks the named
partial when the request comes from htmx).
"""

from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from security.mua import ApprovalRequired
from vaults.models import ProtectedVM, RecoveryPoint, Vault

if TYPE_CHECKING:  # a typing aid of django-stubs, not installed to run
    from django_stubs_ext import WithAnnotations


class PageRequest(HttpRequest):
    """A page's request as the middleware leaves it: htmx details, and (behind
    `login_required`) a signed-in user."""

    user: User
    htmx: HtmxDetails


def render_page(
    request: PageRequest,
    template: str,
    context: dict[str, Any],
    *,
    partial: str | None = None,
    status: int = 200,
) -> HttpResponse:
    """The whole page, or only its named partial when htmx asks."""
    if partial and request.htmx:
        template = f"{template}#{partial}"
    return render(request, template, context, status=status)


def done(request: PageRequest, url: str) -> HttpResponse:
    """Where a successful POST goes: a redirect, or a client-side redirect for htmx."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def apply_errors(
    form: BaseForm, exc: ValidationError, field_map: dict[str, str] | None = None
) -> None:
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


def approval_pending(request: PageRequest, exc: ApprovalRequired) -> HttpResponse:
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


def count_of(qs: QuerySet[Any], field: str = "pk") -> Coalesce:
    """A correlated COUNT(*) subquery, so a list annotates counts without joining rows."""
    sub = qs.order_by().values(field).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(sub, output_field=IntegerField()), 0)


def live_items() -> QuerySet[ProtectedVM]:
    return ProtectedVM.objects.live()


def live_rps() -> QuerySet[RecoveryPoint]:
    return RecoveryPoint.objects.live()


class VaultCounts(TypedDict):
    item_count: int
    rp_count: int


def annotate_vault_counts(
    vaults: QuerySet[Vault],
) -> "QuerySet[WithAnnotations[Vault, VaultCounts]]":
    """Each vault with `item_count` and `rp_count`: its live protected items and recovery
    points."""
    return vaults.annotate(
        item_count=count_of(live_items().filter(vault=OuterRef("pk")), "vault"),
        rp_count=count_of(live_rps().filter(vault=OuterRef("pk")), "vault"),
    )
