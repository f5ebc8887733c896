"""Signing in through an OpenID Connect provider (Authlib's Django client).

The authorization-code flow with PKCE (S256); Authlib keeps the state, the nonce and the code
verifier in the session and checks them on the way back: an unknown or reused state, or an ID
token whose nonce, issuer, audience or signature is wrong, is refused. The user's groups come
from the directory's `groups_claim` in the ID token, else from the userinfo endpoint.

A provider's user is the local user `<username claim>@<directory>`, linked by (directory,
`sub`), so nobody signs in as a local account by choosing a name at the provider.
"""

import logging
from dataclasses import dataclass
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from joserfc.errors import JoseError

from identity import accounts
from identity.models import Directory, DirectoryKind
from identity.secrets import SecretUnavailable, read_secret

log = logging.getLogger(__name__)

# Where a sign-in returns afterwards (the login page's ?next=), kept in the session.
NEXT_KEY = "lifeboat_oidc_next"


class SignInRefused(Exception):
    """The provider's answer is not accepted; `reason` is the audit word, str() the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def providers() -> list[Directory]:
    return list(Directory.objects.filter(kind=DirectoryKind.OIDC, enabled=True))


def client(directory: Directory) -> DjangoOAuth2App:
    oauth = OAuth()
    app: DjangoOAuth2App = oauth.register(
        name=f"lifeboat-{directory.name}",
        client_id=directory.client_id,
        client_secret=read_secret(directory) or None,
        server_metadata_url=directory.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": directory.scopes,
            "code_challenge_method": "S256",
            "timeout": 10,
        },
    )
    return app


def start(directory: Directory, request: HttpRequest, redirect_uri: str) -> HttpResponse:
    """The redirect to the provider (a new state, nonce and code verifier in the session)."""
    try:
        response: HttpResponse = client(directory).authorize_redirect(request, redirect_uri)
    except (SecretUnavailable, OAuthError, OSError) as exc:
        raise SignInRefused("unavailable", str(exc)) from exc
    return response


@dataclass(frozen=True)
class Identity:
    subject: str
    username: str
    groups: frozenset[str]


def _groups(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, list | tuple):
        return frozenset(str(g) for g in value)
    return frozenset()


def identity_from(directory: Directory, request: HttpRequest) -> Identity:
    """The provider's answer on the callback, checked (state, PKCE, ID token with nonce)."""
    try:
        app = client(directory)
        token = app.authorize_access_token(request)
        claims = token.get("userinfo")
        if not claims:
            # No nonce-checked ID token came back: never trust the rest of the answer.
            raise SignInRefused("no_id_token", "the provider sent no ID token")
        if directory.groups_claim not in claims:
            claims = {**app.userinfo(token=token), **claims}
    except SignInRefused:
        raise
    except OAuthError as exc:
        # MismatchingStateError is an OAuthError: a forged, replayed or foreign state.
        raise SignInRefused(exc.error or "oauth_error", str(exc)) from exc
    except JoseError as exc:
        # A bad signature, issuer, audience, expiry or nonce in the ID token.
        raise SignInRefused("invalid_id_token", str(exc)) from exc
    except (SecretUnavailable, OSError) as exc:
        raise SignInRefused("unavailable", str(exc)) from exc
    subject = str(claims["sub"])
    name = str(claims.get(directory.username_claim) or subject)
    return Identity(
        subject=subject,
        username=f"{name}@{directory.name}"[:150],
        groups=_groups(claims.get(directory.groups_claim)),
    )


def sign_in(directory: Directory, request: HttpRequest) -> User:
    """The local user for the provider's answer, linked, enabled and its mappings applied."""
    who = identity_from(directory, request)
    try:
        user = accounts.user_for(directory, who.subject, who.username)
    except accounts.NotLinkable as exc:
        raise SignInRefused("not_linkable", str(exc)) from exc
    accounts.checked(directory, user, subject=who.subject, groups=who.groups, request=request)
    return user
