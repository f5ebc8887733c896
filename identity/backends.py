"""The authentication backend of directory users: LDAP realms on the login form, and the
backend OpenID Connect sign-ins log in through (sessions resolve here).

It comes after `security.lockout.LockoutBackend`, which refuses a locked username or address
before any password reaches a directory; a wrong directory password returns None, so Django's
`user_login_failed` counts it like a wrong local one.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.models import User
from django.http import HttpRequest

from identity import ldap

# What `identity.login_audit` records of the sign-in, left on the user or the request.
LOGIN_INFO = "_lifeboat_login"


class DirectoryBackend(BaseBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if not username or not password:
            return None
        failures: list[dict[str, str]] = []
        for realm in ldap.realms():
            outcome = ldap.sign_in(realm, request, username, password)
            if outcome.user is not None:
                setattr(outcome.user, LOGIN_INFO, {"method": "ldap", "directory": realm.name})
                return outcome.user
            failures.append({"directory": realm.name, "reason": outcome.failure})
        if request is not None and failures:
            setattr(request, LOGIN_INFO, {"method": "ldap", "tried": failures})
        return None

    def get_user(self, user_id: int) -> User | None:
        user = get_user_model()._default_manager.filter(pk=user_id).first()
        return user if user is not None and user.is_active else None
