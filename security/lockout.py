"""Login lockout: repeated failed sign-ins lock a username from an address, or a whole address.

LIFEBOAT["LOGIN_FAILURE_LIMIT"] failures (default 5) of one username from one address within
LOGIN_FAILURE_WINDOW_MINUTES (15) lock that username from that address, and
LOGIN_ADDRESS_FAILURE_LIMIT failures (20) from one address, whatever the usernames, lock that
address, each for LOGIN_LOCKOUT_MINUTES (15) after the last failure. The address is the one
`portal.client_address` decides (a client cannot choose it with a header). Failures are rows
(`LoginFailure`), so every web process sees the same count.

- `LockoutBackend` comes first in AUTHENTICATION_BACKENDS: while locked it raises
  PermissionDenied, which stops `authenticate()` before any password is checked — for the login
  page and the API token endpoint alike. (It also keeps API tokens through a hash upgrade.)
- The `user_login_failed` signal records a failure; `user_logged_in` clears the username's.
- `LockoutAuthenticationForm` (login page) and the token endpoint say "locked" in words.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from portal.client_address import client_ip
from portal.options import option
from portal.tokens import keep_tokens_on_rehash
from security.models import LoginFailure
from vaults import audit


def limit() -> int:
    return int(option("LOGIN_FAILURE_LIMIT", 5))


def address_limit() -> int:
    return int(option("LOGIN_ADDRESS_FAILURE_LIMIT", 20))


def window() -> timedelta:
    return timedelta(minutes=int(option("LOGIN_FAILURE_WINDOW_MINUTES", 15)))


def lock_time() -> timedelta:
    return timedelta(minutes=int(option("LOGIN_LOCKOUT_MINUTES", 15)))


def _norm(username: object) -> str:
    return str(username or "").strip().lower()[:150]


@dataclass(frozen=True)
class Lock:
    until: datetime
    # True: every username from this address is locked, not only the one tried.
    whole_address: bool

    @property
    def message(self) -> str:
        minutes = max(1, int((self.until - timezone.now()).total_seconds() + 59) // 60)
        whom = "from this address" if self.whole_address else "for this user from this address"
        return (
            f"Too many failed sign-ins {whom}; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}."
        )


def _lock_end(failures: QuerySet[LoginFailure], count: int, now: datetime) -> datetime | None:
    """End of the lock that `count` of these failures within the window cause, if it holds."""
    recent = list(
        failures.filter(time__gt=now - max(window(), lock_time()))
        .order_by("-time")
        .values_list("time", flat=True)[:count]
    )
    if len(recent) < count or recent[0] - recent[-1] > window():
        return None
    until = recent[0] + lock_time()
    return until if until > now else None


def current_lock(username: str, ip: str | None, now: datetime | None = None) -> Lock | None:
    """The lock that refuses this username from this address now, if any."""
    now = now or timezone.now()
    # An unknown address is not locked as a whole: that would lock out every such client.
    if ip is not None:
        until = _lock_end(LoginFailure.objects.filter(ip=ip), address_limit(), now)
        if until:
            return Lock(until, whole_address=True)
    until = _lock_end(LoginFailure.objects.filter(username=_norm(username), ip=ip), limit(), now)
    return Lock(until, whole_address=False) if until else None


class LockoutBackend(ModelBackend):
    """The model backend, refusing every attempt while the username or address is locked.

    It is the first backend, so sessions made by `force_login()` resolve through it; the
    directory backend after it (identity.backends) is reached only when no lock holds."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        lock = current_lock(username, client_ip(request)) if username else None
        if lock:
            raise PermissionDenied(lock.message)
        if username is None or password is None:
            return None
        # ModelBackend.authenticate, except for what a hash upgrade does to API tokens.
        User = get_user_model()
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            User().set_password(password)  # as slow as a wrong password (Django #20760)
            return None
        upgrade = partial(keep_tokens_on_rehash, user)
        if check_password(password, user.password, upgrade) and self.user_can_authenticate(user):
            return user
        return None


@receiver(user_login_failed, dispatch_uid="security-login-failed")
def _record_failure(
    sender: str,
    credentials: dict[str, Any],
    request: HttpRequest | None = None,
    **kwargs: object,
) -> None:
    username = _norm(credentials.get("username"))
    if not username:
        return
    ip = client_ip(request)
    if current_lock(username, ip):
        return  # attempts while locked do not extend the lock
    LoginFailure.objects.create(username=username, ip=ip)
    lock = current_lock(username, ip)
    if lock:
        who = {} if lock.whole_address else {"username": username}
        audit.record(
            "login.lockout",
            actor=None,
            request=request,
            after={**who, "ip": ip, "until": lock.until.isoformat()},
        )


@receiver(user_logged_in, dispatch_uid="security-login-succeeded")
def _clear_failures(sender: type[User], request: HttpRequest, user: User, **kwargs: object) -> None:
    LoginFailure.objects.filter(username=_norm(user.get_username()), ip=client_ip(request)).delete()


def purge_old(now: datetime | None = None) -> int:
    """Drop failures too old to matter (periodic)."""
    now = now or timezone.now()
    cutoff = now - max(window(), lock_time()) - timedelta(days=1)
    return LoginFailure.objects.filter(time__lt=cutoff).delete()[0]
