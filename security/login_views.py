"""Signing in: the password step, then the code step for a user with a second factor.

1. `PasswordStep` is Django's login view with the lockout form. A user without a second
   factor is signed in at once (`identity.login_audit` records it). A user with one is *not* signed in:
   the session remembers who passed the password (for `PENDING_SECONDS`) and the browser goes
   to the code step. A local user whom the site setting requires to have a second factor and
   who has none is signed in and marked to enrol (`security.middleware`).
2. `code_step` asks for a code from the app or a recovery code (`second_factor.check`: the
   lockout counts wrong codes, a replayed code is refused) and then signs the user in, which
   clears their failures as a password login does. A user with a security key may answer with
   it instead (`key_options`, `key_sign_in`: JSON for `static/js/webauthn.js`).

API tokens are not made here: `portal.api.views.ObtainTokenView` asks for the code as `otp`.
"""

import json
import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from identity.backends import LOGIN_INFO
from portal.pages import apply_errors
from security import second_factor, security_keys
from security.forms import CodeForm, LockoutAuthenticationForm
from security.logins import Method
from security.middleware import MUST_ENROL
from security.security_keys import RelyingParty

# Who passed the password step and waits for the code step (session key).
PENDING = "lifeboat_second_step"
# How long the code step waits after the password.
PENDING_SECONDS = 300


class PasswordStep(LoginView):
    authentication_form = LockoutAuthenticationForm

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if second_factor.has_second_factor(user):
            # A new session id for the half-signed-in state, as `login()` makes for the whole.
            self.request.session.cycle_key()
            self.request.session[PENDING] = {
                "user": user.pk,
                "backend": getattr(user, "backend", None),  # set by authenticate()
                # How the password was checked (here, or by a directory), for the audit record.
                "first": getattr(user, LOGIN_INFO, None) or {"method": Method.PASSWORD},
                "at": time.time(),
                "next": self.get_redirect_url(),
            }
            return redirect("login-code")
        response = super().form_valid(form)  # signs in; identity.login_audit records it
        if second_factor.must_enrol(user):
            self.request.session[MUST_ENROL] = True
            messages.warning(
                self.request,
                "This site requires a second factor for your account: set up an "
                "authenticator app to continue.",
            )
            return redirect("account-second-factor")
        return response


def _pending(request: HttpRequest) -> dict[str, Any] | None:
    pending = request.session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        return None
    return pending


def _pending_user(request: HttpRequest) -> tuple[dict[str, Any], User] | None:
    pending = _pending(request)
    if pending is None:
        return None
    user = get_user_model()._default_manager.filter(pk=pending["user"], is_active=True).first()
    return None if user is None else (pending, user)


def _finish(request: HttpRequest, pending: dict[str, Any], user: User, method: str) -> str:
    """Sign the user in after the second step; where the browser goes next."""
    del request.session[PENDING]
    first = pending.get("first") or {"method": Method.PASSWORD}
    info = {**first, "method": method, "first_factor": first.get("method")}
    setattr(user, LOGIN_INFO, info)  # what identity.login_audit records of this sign-in
    auth_login(request, user, backend=pending["backend"])
    if method == Method.RECOVERY:
        left = second_factor.recovery_codes_left(user)
        messages.warning(
            request,
            f"You used a recovery code; {left} left. Make new ones on the "
            "second-factor page if you are running out.",
        )
    return _next(request, pending.get("next", ""))


def code_step(request: HttpRequest) -> HttpResponse:
    found = _pending_user(request)
    if found is None:
        request.session.pop(PENDING, None)
        messages.info(request, "Log in with your password first.")
        return redirect("login")
    pending, user = found
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            method = second_factor.check(user, form.cleaned_data["code"], request=request)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            return HttpResponseRedirect(_finish(request, pending, user, method))
    context = {"form": form, "has_keys": bool(security_keys.keys(user))}
    return render(request, "registration/login_code.html", context)


# -- the second step with a security key (JSON for static/js/webauthn.js) ---------------------

NOT_PENDING = {"detail": ["Log in with your password first."]}


@require_POST
def key_options(request: HttpRequest) -> HttpResponse:
    found = _pending_user(request)
    if found is None:
        return JsonResponse(NOT_PENDING, status=400)
    options = security_keys.begin(
        request.session, security_keys.SIGN_IN, found[1], RelyingParty.of(request)
    )
    return HttpResponse(options, content_type="application/json")


@require_POST
def key_sign_in(request: HttpRequest) -> HttpResponse:
    found = _pending_user(request)
    if found is None:
        return JsonResponse(NOT_PENDING, status=400)
    pending, user = found
    try:
        method = security_keys.sign_in(
            user,
            request.session,
            json_body(request).get("credential"),
            rp=RelyingParty.of(request),
            request=request,
        )
    except ValidationError as exc:
        return json_errors(exc)
    return JsonResponse({"redirect": _finish(request, pending, user, method)})


def _next(request: HttpRequest, url: str) -> str:
    if url and url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()):
        return url
    return reverse(settings.LOGIN_REDIRECT_URL)


# -- what the JSON doors of the security-key ceremonies share ---------------------------


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object ({} when it is not one: the checks then name what is missing)."""
    if request.content_type != "application/json":
        return {}  # a form's body was read as request.POST already
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def json_errors(exc: ValidationError) -> JsonResponse:
    """A refusal as the API words it: 400 {"field": ["message"]}."""
    if hasattr(exc, "error_dict"):
        return JsonResponse(exc.message_dict, status=400)
    return JsonResponse({"detail": exc.messages}, status=400)
