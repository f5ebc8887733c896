"""The audit record of every sign-in: who, how (password, totp, recovery, webauthn), success or failure,
from which address (`portal.client_address.client_ip`, written by `vaults.audit.record`).

- Password failures of every door (login page, API token endpoint) arrive through Django's
  `user_login_failed` signal; codes failed by `security.second_factor.check` come with a
  `method` in their credentials and are recorded here too, so one receiver writes them all.
- Successes are recorded by the door that completes the sign-in (`succeeded`), which knows
  the method: the password step when no second factor is asked, the code step otherwise.
"""

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from vaults import audit


class Method:
    """How a sign-in proved who it was (the audit record's `method`)."""

    PASSWORD = "password"
    TOTP = "totp"
    RECOVERY = "recovery"
    WEBAUTHN = "webauthn"


def succeeded(request: HttpRequest, user: User, method: str, *, door: str = "page") -> None:
    audit.record(
        "login.success",
        actor=user,
        request=request,
        after={"username": user.get_username(), "method": method, "door": door},
    )


@receiver(user_login_failed, dispatch_uid="security-login-audit")
def _failed(
    sender: str,
    credentials: dict[str, Any],
    request: HttpRequest | None = None,
    **kwargs: object,
) -> None:
    username = str(credentials.get("username") or "")[:150]
    after = {
        "username": username,
        "method": credentials.get("method", Method.PASSWORD),
        "door": credentials.get("door", "api" if _is_api(request) else "page"),
    }
    if credentials.get("purpose"):
        # A code asked again for an action (an approval), not at sign-in.
        after["purpose"] = credentials["purpose"]
    audit.record("login.failure", actor=None, request=request, after=after)


def _is_api(request: HttpRequest | None) -> bool:
    return request is not None and request.path.startswith("/api/")
