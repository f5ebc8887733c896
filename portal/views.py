"""The overview (the home page), the user's API tokens and the site administrators' health page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db.models import OuterRef, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal import health as health_checks
from portal.forms import TokenForm
from portal.models import ApiToken
from portal.pages import PageRequest, annotate_vault_counts, count_of, done, live_items
from portal.reports.items import HEALTH_TONES
from portal.reports.overview import overview
from portal.tokens import issue_token, revoke_token
from vaults import access
from vaults.models import Health, Vault, health_filter

# The healths the overview's vault table counts per vault, each linking to the filtered list.
NEEDS_ATTENTION = [Health.FAILED, Health.WARNING]


@login_required
def dashboard(request: PageRequest) -> HttpResponse:
    """The overview: what needs attention across the vaults the user sees."""
    data = overview(request.user)
    vaults = list(
        annotate_vault_counts(access.visible(Vault.objects.all(), request.user)).annotate(
            **{
                f"{h}_count": count_of(
                    live_items().filter(health_filter(h), vault=OuterRef("pk")), "vault"
                )
                for h in NEEDS_ATTENTION
            }
        )
    )
    context = {
        "o": data,
        "vaults": vaults,
        "healths": [
            (value, label, data.health[value], HEALTH_TONES[Health(value)])
            for value, label in Health.choices
        ],
    }
    return render(request, "portal/overview.html", context)


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
