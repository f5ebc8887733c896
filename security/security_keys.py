"""Security keys and passkeys (WebAuthn) as a way through the login's second step.

A security key stands beside the authenticator app, never instead of it: it can be added
only by a user who has an app (`second_factor.has_second_factor`), and goes with the last app.
The app's codes stay what the API and MUA approvals ask for (`otp`: a script cannot touch a
key), and the recovery codes stand in for both.

1. `begin(session, purpose, user, rp)` makes the options of a ceremony and keeps its random
   challenge in the session, for one ceremony of that purpose and user only.
2. `add_key` / `sign_in` take the browser's answer and check it with py_webauthn against that
   challenge, this site's origin and relying-party id (the host the browser asked), and, for
   a sign-in, the key's public key and signature counter (a counter that does not grow is a
   cloned key's: refused). The challenge is used once, whatever the outcome.
3. A failed sign-in is a failed login for the lockout, as a wrong code is.
"""

import json
import time
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from portal.client_address import client_ip
from security import lockout, second_factor
from security.logins import Method
from security.models import SecurityKey
from vaults import audit

# The ceremony under way (session key): purpose, user, challenge, when.
CEREMONY = "lifeboat_webauthn"
CEREMONY_SECONDS = 300
RP_NAME = "Lifeboat"

REGISTER = "register"
SIGN_IN = "sign_in"


@dataclass(frozen=True)
class RelyingParty:
    """Who the browser talks to: the host it asked (the relying-party id) and the origin."""

    id: str
    origin: str

    @classmethod
    def of(cls, request: HttpRequest) -> "RelyingParty":
        # get_host() is checked against ALLOWED_HOSTS; the origin carries the scheme and port.
        return cls(id=request.get_host().rsplit(":", 1)[0].strip("[]"), origin=_origin(request))


def _origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def keys(user: User) -> list[SecurityKey]:
    return list(SecurityKey.objects.filter(user=user).order_by("id"))


def _descriptors(user: User) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(id=base64url_to_bytes(k.credential_id)) for k in keys(user)
    ]


def begin(session: SessionBase, purpose: str, user: User, rp: RelyingParty) -> str:
    """The JSON options of a new ceremony for `user`; its challenge waits in the session."""
    if purpose == REGISTER:
        if not second_factor.has_second_factor(user):
            raise ValidationError(
                {"key": "Add an authenticator app first: a security key stands beside it."}
            )
        options: Any = generate_registration_options(
            rp_id=rp.id,
            rp_name=RP_NAME,
            user_name=user.get_username(),
            user_id=str(user.pk).encode(),
            exclude_credentials=_descriptors(user),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
    else:
        options = generate_authentication_options(
            rp_id=rp.id,
            allow_credentials=_descriptors(user),
            user_verification=UserVerificationRequirement.PREFERRED,
        )
    session[CEREMONY] = {
        "purpose": purpose,
        "user": user.pk,
        "challenge": bytes_to_base64url(options.challenge),
        "at": time.time(),
    }
    return str(options_to_json(options))


def _challenge(session: SessionBase, purpose: str, user: User) -> bytes:
    """The ceremony's challenge, taken out of the session (it answers one response only)."""
    ceremony = session.pop(CEREMONY, None)
    if (
        not isinstance(ceremony, dict)
        or ceremony.get("purpose") != purpose
        or ceremony.get("user") != user.pk
        or time.time() - ceremony.get("at", 0) > CEREMONY_SECONDS
    ):
        raise ValidationError({"key": "The security key was not asked here, or too long ago."})
    return base64url_to_bytes(ceremony["challenge"])


def _parsed(credential: object) -> dict[str, Any]:
    if isinstance(credential, str):
        try:
            credential = json.loads(credential)
        except ValueError:
            credential = None
    if not isinstance(credential, dict) or not isinstance(credential.get("id"), str):
        raise ValidationError({"credential": "Not a WebAuthn credential."})
    return credential


def add_key(
    user: User,
    session: SessionBase,
    credential: object,
    *,
    name: str,
    rp: RelyingParty,
    request: HttpRequest | None = None,
) -> SecurityKey:
    """Check the browser's new credential against the registration challenge and keep it."""
    challenge = _challenge(session, REGISTER, user)
    try:
        verified = verify_registration_response(
            credential=_parsed(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except InvalidRegistrationResponse as exc:
        raise ValidationError({"credential": f"The security key's answer is wrong: {exc}"}) from exc
    credential_id = bytes_to_base64url(verified.credential_id)
    if SecurityKey.objects.filter(credential_id=credential_id).exists():
        raise ValidationError({"credential": "This security key is already added."})
    with transaction.atomic():
        key = SecurityKey.objects.create(
            user=user,
            name=(name or "").strip()[:64] or "Security key",
            credential_id=credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
        )
        audit.record(
            "second_factor.enrol",
            actor=user,
            request=request,
            obj=key,
            after={"username": user.get_username(), "kind": "webauthn", "name": key.name},
        )
    return key


def sign_in(
    user: User,
    session: SessionBase,
    credential: object,
    *,
    rp: RelyingParty,
    request: HttpRequest | None = None,
) -> str:
    """Check an assertion of one of the user's keys; the method (`webauthn`) or a
    ValidationError, counted by the lockout when the answer is wrong."""
    lock = lockout.current_lock(user.get_username(), client_ip(request))
    if lock:
        raise ValidationError({"key": lock.message}, code="locked")
    challenge = _challenge(session, SIGN_IN, user)
    parsed = _parsed(credential)
    key = SecurityKey.objects.filter(user=user, credential_id=parsed["id"]).first()
    try:
        if key is None:
            raise InvalidAuthenticationResponse("not one of this user's security keys")
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=bytes(key.public_key),
            credential_current_sign_count=key.sign_count,
        )
        # py_webauthn refused a counter that did not grow (a cloned key's; keys without a
        # counter stay at 0). Taken only if nobody used the key since it was read.
        taken = SecurityKey.objects.filter(pk=key.pk, sign_count=key.sign_count).update(
            sign_count=verified.new_sign_count, last_used_at=timezone.now()
        )
        if not taken:
            raise InvalidAuthenticationResponse("the key was used at the same time")
    except InvalidAuthenticationResponse as exc:
        user_login_failed.send(
            sender=__name__,
            credentials={"username": user.get_username(), "method": Method.WEBAUTHN},
            request=request,
        )
        raise ValidationError({"key": f"The security key's answer is wrong: {exc}"}) from exc
    return Method.WEBAUTHN


def remove_key(user: User, key_id: int, *, code: str, request: HttpRequest | None = None) -> None:
    """Remove one of the user's keys, proven with a current code from the app."""
    key = SecurityKey.objects.filter(user=user, pk=key_id).first()
    if key is None:
        raise ValidationError({"device": "No such security key of yours."})
    second_factor.check(user, code, request=request, purpose="remove")
    with transaction.atomic():
        key.delete()
        audit.record(
            "second_factor.remove",
            actor=user,
            request=request,
            after={"username": user.get_username(), "kind": "webauthn", "name": key.name},
        )
