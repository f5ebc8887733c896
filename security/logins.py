"""How a sign-in proved who it was, in the words of the audit log's `method`.

`identity.login_audit` writes `login.success` / `login.failure` for every sign-in from
Django's signals: the code step leaves the method on the user it signs in
(`identity.backends.LOGIN_INFO`), and a wrong code reports its method in the credentials of
`user_login_failed`. Only the API token endpoint, which signs no session in, records its
success here (`succeeded`).
"""

from django.contrib.auth.models import User
from django.http import HttpRequest

from vaults import audit


class Method:
    PASSWORD = "password"
    TOTP = "totp"
    RECOVERY = "recovery"
    WEBAUTHN = "webauthn"


def succeeded(request: HttpRequest, user: User, method: str) -> None:
    """A token asked for with a password (and a code): a sign-in through the API."""
    audit.record(
        "login.success",
        actor=user,
        request=request,
        obj=user,
        after={"method": method, "door": "api"},
    )
