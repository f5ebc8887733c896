"""Signing in: the password step, then the code step for a user with a second factor.

1. `PasswordStep` is Django's login view with the lockout form. A user without a second
   factor is signed in at once (audited as `password`). A user with one is *not* signed in:
   the session remembers who passed the password (for `PENDING_SECONDS`) and the browser goes
   to the code step. A local user whom the site setting requires to have a second factor and
   who has none is signed in and marked to enrol (`security.middleware`).
2. `code_step` asks for a code from the app or a recovery code (`second_factor.check`: the
   lockout counts wrong codes, a replayed code is refused) and then signs the user in, which
   clears their failures as a password login does.

API tokens are not made here: `portal.api.views.ObtainTokenView` asks for the code as `otp`.
"""

import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from portal.pages import apply_errors
from security import second_factor
from security.forms import CodeForm, LockoutAuthenticationForm
from security.logins import Method, succeeded
from security.middleware import MUST_ENROL

# Who passed the password step and waits for the code step (session key).
PENDING = "lifeboat_second_step"
# How long the code step waits after the password.
PENDING_SECONDS = 300


class PasswordStep(LoginView):
    authentication_form = LockoutAuthenticationForm

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if second_factor.has_second_factor(user):
            self.request.session[PENDING] = {
                "user": user.pk,
                "backend": getattr(user, "backend", None),  # set by authenticate()
                "at": time.time(),
                "next": self.get_redirect_url(),
            }
            return redirect("login-code")
        response = super().form_valid(form)  # signs in
        succeeded(self.request, user, Method.PASSWORD)
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


def code_step(request: HttpRequest) -> HttpResponse:
    pending = _pending(request)
    user = None
    if pending is not None:
        user = get_user_model()._default_manager.filter(pk=pending["user"], is_active=True).first()
    if pending is None or user is None:
        request.session.pop(PENDING, None)
        messages.info(request, "Log in with your password first.")
        return redirect("login")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            method = second_factor.check(user, form.cleaned_data["code"], request=request)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            del request.session[PENDING]
            auth_login(request, user, backend=pending["backend"])
            succeeded(request, user, method)
            if method == Method.RECOVERY:
                left = second_factor.recovery_codes_left(user)
                messages.warning(
                    request,
                    f"You used a recovery code; {left} left. Make new ones on the "
                    "second-factor page if you are running out.",
                )
            return HttpResponseRedirect(_next(request, pending.get("next", "")))
    return render(request, "registration/login_code.html", {"form": form})


def _next(request: HttpRequest, url: str) -> str:
    if url and url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()):
        return url
    return reverse(settings.LOGIN_REDIRECT_URL)
