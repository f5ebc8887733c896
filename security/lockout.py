"""Login lockout: after repeated failed sign-ins of one username from one address, refuse it.

LIFEBOAT["LOGIN_FAILURE_LIMIT"] failures (default 5) within LOGIN_FAILURE_WINDOW_MINUTES
(15) lock that username from that address for LOGIN_LOCKOUT_MINUTES (15) after the last
failure. Failures are rows (`LoginFailure`), so every web process sees the same count.

- `LockoutBackend` comes first in AUTHENTICATION_BACKENDS: while locked it raises
  PermissionDenied, which stops `authenticate()` before any password is checked — for the login
  page and the API token endpoint alike.
- The `user_login_failed` signal records a failure; `user_logged_in` clears them.
- `LockoutAuthenticationForm` (login page) and the token endpoint say "locked" in words.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.utils import timezone

from security.models import LoginFailure
from vaults import audit


def _opt(name: str, default: int) -> int:
    return int(settings.LIFEBOAT.get(name, default))


def limit() -> int:
    return _opt("LOGIN_FAILURE_LIMIT", 5)


def window() -> timedelta:
    return timedelta(minutes=_opt("LOGIN_FAILURE_WINDOW_MINUTES", 15))


def lock_time() -> timedelta:
    return timedelta(minutes=_opt("LOGIN_LOCKOUT_MINUTES", 15))


def _norm(username) -> str:
    return str(username or "").strip().lower()[:150]


def locked_until(username, ip, now=None):
    """When the lock of this username from this address ends, or None if it is not locked."""
    now = now or timezone.now()
    recent = list(
        LoginFailure.objects.filter(
            username=_norm(username), ip=ip, time__gt=now - max(window(), lock_time())
        )
        .order_by("-time")
        .values_list("time", flat=True)[: limit()]
    )
    if len(recent) < limit() or recent[0] - recent[-1] > window():
        return None
    until = recent[0] + lock_time()
    return until if until > now else None


def request_ip(request) -> str | None:
    return audit.client_ip(request)


def lock_message(until) -> str:
    minutes = max(1, int((until - timezone.now()).total_seconds() + 59) // 60)
    return (
        "Too many failed sign-ins for this user from this address; try again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}."
    )


class LockoutBackend(ModelBackend):
    """The model backend, refusing every attempt while the username+address is locked.

    It is the only backend, so sessions made by `login()`/`force_login()` resolve through it."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        until = locked_until(username, request_ip(request)) if username else None
        if until:
            raise PermissionDenied(lock_message(until))
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(user_login_failed, dispatch_uid="security-login-failed")
def _record_failure(sender, credentials, request=None, **kwargs) -> None:
    username = _norm(credentials.get("username"))
    if not username:
        return
    ip = request_ip(request)
    if locked_until(username, ip):
        return  # attempts while locked do not extend the lock
    LoginFailure.objects.create(username=username, ip=ip)
    until = locked_until(username, ip)
    if until:
        audit.record(
            "login.lockout",
            actor=None,
            request=request,
            after={"username": username, "ip": ip, "until": until.isoformat()},
        )


@receiver(user_logged_in, dispatch_uid="security-login-succeeded")
def _clear_failures(sender, request, user, **kwargs) -> None:
    LoginFailure.objects.filter(
        username=_norm(user.get_username()), ip=request_ip(request)
    ).delete()


def purge_old(now=None) -> int:
    """Drop failures too old to matter (periodic)."""
    now = now or timezone.now()
    cutoff = now - max(window(), lock_time()) - timedelta(days=1)
    return LoginFailure.objects.filter(time__lt=cutoff).delete()[0]
