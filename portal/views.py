"""The dashboard, the user's API tokens and the site administrators' health page."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db.models import Count, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from jobs.models import Job, Status
from portal import health as health_checks
from portal.forms import TokenForm
from portal.models import ApiToken
from portal.pages import PageRequest, annotate_vault_counts, done
from portal.tokens import issue_token, revoke_token
from vaults import access
from vaults.models import Vault


@login_required
def dashboard(request: PageRequest) -> HttpResponse:
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


def _tokens(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


@login_required
def tokens(request: PageRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        _token, new_key = issue_token(request.user, name=form.cleaned_data["name"], request=request)
        form = TokenForm()
    context = {
        "form": form,
        "tokens": _tokens(request.user).filter(revoked_at__isnull=True),
        "revoked": _tokens(request.user).filter(revoked_at__isnull=False)[:20],
        "new_key": new_key,
    }
    return render(request, "portal/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: PageRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(_tokens(request.user), pk=pk)
    if not token.is_active:
        raise Http404("No such token.")
    revoke_token(token, by=request.user, request=request)
    messages.success(request, f"Token {token.name} revoked.")
    return done(request, reverse("account-tokens"))


@login_required
def health_page(request: PageRequest) -> HttpResponse:
    """Every check with what it found: stores with their free space, workers, queues."""
    access.require_site(request.user, "view_health")
    found = health_checks.check()
    return render(request, "portal/health.html", {"health": found})
