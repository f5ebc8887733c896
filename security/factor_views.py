"""Second-factor pages: a user's own authenticator apps and recovery codes, and the site
admins' page (who must have a second factor; resetting a user's devices).

Every change is made by `security.second_factor`, which checks the caller and audits.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.pages import PageRequest, apply_errors, done, error_text
from security import second_factor, security_keys
from security.forms import EnrolForm
from security.login_views import json_body, json_errors
from security.middleware import MUST_ENROL
from security.models import SecondFactorRequired
from vaults import access

PAGE_SIZE = 50


@login_required
def account_page(request: PageRequest) -> HttpResponse:
    """The user's authenticator apps and how many recovery codes are left."""
    user = request.user
    context = {
        "apps": second_factor.apps(user),
        "keys": security_keys.keys(user),
        "codes_left": second_factor.recovery_codes_left(user),
        "required": second_factor.required_for(user),
        "must_enrol": bool(request.session.get(MUST_ENROL)),
    }
    return render(request, "security/second_factor.html", context)


@login_required
def app_enrol(request: PageRequest) -> HttpResponse:
    """Add an authenticator app: scan the QR code (or type the secret), then type a code."""
    device = second_factor.pending_app(request.user)
    form = EnrolForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            new = second_factor.confirm_app(
                device, form.cleaned_data["code"], name=form.cleaned_data["name"], request=request
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            request.session.pop(MUST_ENROL, None)
            messages.success(request, f"Authenticator app “{new.device.name}” added.")
            if new.recovery_codes:
                return _show_codes(request, new.recovery_codes)
            return done(request, reverse("account-second-factor"))
    context = {
        "form": form,
        "qr": second_factor.qr_svg(device),
        "secret": second_factor.secret_text(device),
    }
    return render(
        request, "security/second_factor_app.html", context, status=400 if form.errors else 200
    )


def _show_codes(request: PageRequest, codes: list[str]) -> HttpResponse:
    """Recovery codes are shown once, in this response; only their use is stored."""
    response = render(request, "security/recovery_codes.html", {"codes": codes})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def recovery_codes(request: PageRequest) -> HttpResponse:
    if not second_factor.has_second_factor(request.user):
        messages.error(request, "Add an authenticator app first: recovery codes stand in for it.")
        return done(request, reverse("account-second-factor"))
    try:
        codes = second_factor.replace_recovery_codes(
            request.user, code=request.POST.get("code", ""), request=request
        )
    except ValidationError as exc:
        messages.error(request, f"No new recovery codes: {error_text(exc)}")
        return done(request, reverse("account-second-factor"))
    return _show_codes(request, codes)


@login_required
@require_POST
def app_remove(request: PageRequest, pk: int) -> HttpResponse:
    try:
        second_factor.remove_app(
            request.user, pk, code=request.POST.get("code", ""), request=request
        )
    except ValidationError as exc:
        if "device" in exc.message_dict:
            raise Http404(error_text(exc)) from exc
        messages.error(request, f"Not removed: {error_text(exc)}")
        return done(request, reverse("account-second-factor"))
    if second_factor.must_enrol(request.user):
        request.session[MUST_ENROL] = True
    messages.success(request, "Authenticator app removed.")
    return done(request, reverse("account-second-factor"))


# -- security keys (JSON for static/js/webauthn.js) ----------------------------------------------


@login_required
@require_POST
def key_options(request: PageRequest) -> HttpResponse:
    try:
        options = security_keys.begin(
            request.session,
            security_keys.REGISTER,
            request.user,
            security_keys.RelyingParty.of(request),
        )
    except ValidationError as exc:
        return json_errors(exc)
    return HttpResponse(options, content_type="application/json")


@login_required
@require_POST
def key_add(request: PageRequest) -> HttpResponse:
    body = json_body(request)
    try:
        key = security_keys.add_key(
            request.user,
            request.session,
            body.get("credential"),
            name=str(body.get("name") or ""),
            rp=security_keys.RelyingParty.of(request),
            request=request,
        )
    except ValidationError as exc:
        return json_errors(exc)
    messages.success(request, f"Security key “{key.name}” added.")
    return JsonResponse({"redirect": reverse("account-second-factor")})


@login_required
@require_POST
def key_remove(request: PageRequest, pk: int) -> HttpResponse:
    try:
        security_keys.remove_key(
            request.user, pk, code=request.POST.get("code", ""), request=request
        )
    except ValidationError as exc:
        if "device" in exc.message_dict:
            raise Http404(error_text(exc)) from exc
        messages.error(request, f"Not removed: {error_text(exc)}")
        return done(request, reverse("account-second-factor"))
    messages.success(request, "Security key removed.")
    return done(request, reverse("account-second-factor"))


# -- site admins -------------------------------------------------------------------------------


class RequiredForm(forms.Form):
    second_factor_required = forms.ChoiceField(
        choices=SecondFactorRequired.choices,
        label="Second factor required for",
        help_text="Local accounts asked to enrol after their password at their next login.",
    )


@login_required
def site_page(request: PageRequest) -> HttpResponse:
    """Who must have a second factor, and every user's devices (site admins)."""
    access.require_site(request.user, "manage_second_factor")
    form = RequiredForm(
        request.POST or None, initial={"second_factor_required": second_factor.required()}
    )
    if request.method == "POST" and form.is_valid():
        try:
            second_factor.set_required(
                form.cleaned_data["second_factor_required"], by=request.user, request=request
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, "Second-factor setting saved.")
            return done(request, reverse("second-factor-site"))
    users = User.objects.annotate(
        app_count=Count("totpdevice", filter=Q(totpdevice__confirmed=True), distinct=True),
        codes_left=Count("staticdevice__token_set", distinct=True),
    ).order_by("username")
    page = Paginator(users, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "users": page.object_list}
    return render(
        request, "security/second_factor_site.html", context, status=400 if form.errors else 200
    )


@login_required
@require_POST
def user_reset(request: PageRequest, username: str) -> HttpResponse:
    access.require_site(request.user, "manage_second_factor")
    user = User.objects.filter(username=username).first()
    if user is None:
        raise Http404("No such user.")
    removed = second_factor.reset(user, by=request.user, request=request)
    messages.success(
        request,
        f"Second factor of {user.username} reset ({removed} authenticator app"
        f"{'' if removed == 1 else 's'} and the recovery codes removed).",
    )
    return done(request, reverse("second-factor-site"))
