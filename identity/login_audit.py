"""Every sign-in, successful or not, in the audit log: method (password, ldap, oidc; totp,
recovery, webauthn for a second step, with the first factor beside it), the directory, the
outcome and the source address (audit records it from the request)."""

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from identity.backends import LOGIN_INFO
from vaults import audit


@receiver(user_logged_in, dispatch_uid="identity-login-audit")
def _logged_in(sender: type[User], request: HttpRequest, user: User, **kwargs: object) -> None:
    info = getattr(user, LOGIN_INFO, None) or {"method": "password"}
    audit.record("login.success", actor=user, request=request, obj=user, after=info)


@receiver(user_login_failed, dispatch_uid="identity-login-failed-audit")
def _login_failed(
    sender: str,
    credentials: dict[str, Any],
    request: HttpRequest | None = None,
    **kwargs: object,
) -> None:
    # A wrong second-factor code names its method (and, asked for an approval, its purpose)
    # in the credentials it reports (security.second_factor.check).
    info = getattr(request, LOGIN_INFO, None) or {
        "method": credentials.get("method", "password"),
        **({"purpose": credentials["purpose"]} if credentials.get("purpose") else {}),
    }
    username = str(credentials.get("username") or "")[:150]
    audit.record("login.failure", actor=None, request=request, after={"username": username, **info})
