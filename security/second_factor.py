"""The second factor of local accounts: authenticator apps (TOTP) and recovery codes.

- Devices are django-otp's: a `TOTPDevice` per authenticator app (confirmed once the user
  typed a code from it) and one `StaticDevice` per user holding the recovery codes, each of
  which works once. A user "has a second factor" while a confirmed authenticator app exists;
  removing the last one removes the recovery codes with it, and the security keys
  (`security.security_keys`, WebAuthn), which stand beside an app at the login only.
- `check` verifies a code: authenticator apps first, then recovery codes. A TOTP code counts
  only for a time step later than the last one accepted, taken by a conditional UPDATE, so a
  replayed code is refused even when two requests bring it at once.
- Wrong codes are login failures (the lockout rules are unchanged): `check` refuses while
  `security.lockout` locks the username from this address, and reports a wrong code through
  `user_login_failed`, which the lockout counts and `identity.login_audit` records.
- Who must have one: `SiteSecurity.second_factor_required` (site admins change it);
  `required_for(user)`. Only local accounts (with a usable password) are asked: accounts of a
  directory prove themselves there.
- Approving an MUA request asks a fresh code of an approver who has a second factor
  (`fresh_code_for_approval`, registered with `security.mua` in `SecurityConfig.ready`).
- API tokens are the machine path: a token carries no second factor and works as before.
"""

import secrets
import time
from base64 import b32encode
from dataclasses import dataclass

import segno
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.client_address import client_ip
from security import lockout
from security.logins import Method
from security.models import SecondFactorRequired, SecurityKey, SiteSecurity
from vaults import access, audit

RECOVERY_CODES = 10
RECOVERY_DEVICE = "Recovery codes"
DEFAULT_APP_NAME = "Authenticator app"


# -- who has one, who must ----------------------------------------------------------------------------


def is_local(user: User) -> bool:
    """A local account signs in with its own password here (not through a directory)."""
    return user.has_usable_password()


def apps(user: User) -> list[TOTPDevice]:
    """The user's confirmed authenticator apps, oldest first."""
    return list(TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id"))


def has_second_factor(user: User | AnonymousUser) -> bool:
    return bool(
        user.is_authenticated and TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    )


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def required() -> str:
    """Who must have a second factor (no row yet: nobody; reading writes nothing)."""
    value = (
        SiteSecurity.objects.filter(pk=1).values_list("second_factor_required", flat=True).first()
    )
    return value or SecondFactorRequired.NOBODY


def required_for(user: User) -> bool:
    """Does the site setting ask this user for a second factor?"""
    if not is_local(user):
        return False
    policy = required()
    if policy == SecondFactorRequired.EVERYONE:
        return True
    return policy == SecondFactorRequired.SITE_ADMINS and access.is_site_admin(user)


def must_enrol(user: User) -> bool:
    return required_for(user) and not has_second_factor(user)


# -- enrolment ------------------------------------------------------------------------------------------


def pending_app(user: User) -> TOTPDevice:
    """The authenticator app being enrolled: unconfirmed until a code from it is typed."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEFAULT_APP_NAME, confirmed=False)
    return device


def secret_text(device: TOTPDevice) -> str:
    """The secret as an app expects it typed: base32, in groups of four."""
    text = b32encode(device.bin_key).decode()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def qr_svg(device: TOTPDevice) -> str:
    """The `otpauth://` URI as an inline SVG QR code (no image file, nothing fetched)."""
    return str(segno.make(device.config_url, error="m").svg_inline(scale=4, border=2))


def _normal(code: str) -> str:
    return "".join(str(code or "").split()).replace("-", "").lower()


def _totp_step(device: TOTPDevice, code: str) -> int | None:
    """The time step this code belongs to, if it is one of the device's, later than the last."""
    if not code.isdigit() or len(code) != device.digits:
        return None
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    if not totp.verify(int(code), device.tolerance, device.last_t + 1):
        return None
    return totp.t()


def _take_step(device: TOTPDevice, step: int) -> bool:
    """Record the step as used; False when another request used it (or a later one) first."""
    taken = TOTPDevice.objects.filter(pk=device.pk, last_t__lt=step).update(last_t=step)
    if taken:
        device.last_t = step
    return bool(taken)


@dataclass(frozen=True)
class NewApp:
    device: TOTPDevice
    # Shown once: the codes made with a user's first authenticator app.
    recovery_codes: list[str]


def confirm_app(
    device: TOTPDevice, code: str, *, name: str, request: HttpRequest | None = None
) -> NewApp:
    """Confirm an enrolling app with a code from it; the first app brings recovery codes."""
    name = (name or "").strip()[:64] or DEFAULT_APP_NAME
    step = _totp_step(device, _normal(code))
    if step is None or not _take_step(device, step):
        raise ValidationError(
            {"code": "That code does not match the app: check the device's clock and try again."}
        )
    user = device.user
    first = not has_second_factor(user)
    with transaction.atomic():
        device.confirmed, device.name = True, name
        device.save(update_fields=["confirmed", "name"])
        audit.record(
            "second_factor.enrol",
            actor=user,
            request=request,
            obj=device,
            after={"username": user.get_username(), "kind": "totp", "name": name},
        )
        codes = new_recovery_codes(user, request=request) if first else []
    return NewApp(device, codes)


def replace_recovery_codes(
    user: User, *, code: str, request: HttpRequest | None = None
) -> list[str]:
    """New recovery codes asked for by the user, proven with a current code (a session alone
    does not get codes that would sign in later)."""
    check(user, code, request=request, purpose="recovery_codes")
    return new_recovery_codes(user, request=request)


def new_recovery_codes(user: User, *, request: HttpRequest | None = None) -> list[str]:
    """Replace the user's recovery codes with new ones (shown once; each works once)."""
    codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
    with transaction.atomic():
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE, confirmed=True)
        StaticToken.objects.bulk_create(
            StaticToken(device=device, token=_normal(code)) for code in codes
        )
        audit.record(
            "second_factor.recovery_codes",
            actor=user,
            request=request,
            obj=device,
            after={"username": user.get_username(), "count": len(codes)},
        )
    return codes


def _recovery_code() -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
    text = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{text[:5]}-{text[5:]}"


def remove_app(
    user: User, device_id: int, *, code: str, request: HttpRequest | None = None
) -> None:
    """Remove one of the user's own authenticator apps (with the last, the recovery codes),
    proven with a current code: a session alone does not take a second factor away."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True, pk=device_id).first()
    if device is None:
        raise ValidationError({"device": "No such authenticator app of yours."})
    check(user, code, request=request, purpose="remove")
    with transaction.atomic():
        device.delete()
        last = not has_second_factor(user)
        if last:
            # Recovery codes and security keys stand beside an app, never alone.
            StaticDevice.objects.filter(user=user).delete()
            SecurityKey.objects.filter(user=user).delete()
        audit.record(
            "second_factor.remove",
            actor=user,
            request=request,
            after={
                "username": user.get_username(),
                "kind": "totp",
                "name": device.name,
                "recovery_codes_removed": last,
                "security_keys_removed": last,
            },
        )


def reset(user: User, *, by: User, request: HttpRequest | None = None) -> int:
    """A site admin removes every device of a user (lost phone); they enrol again."""
    access.require_site(by, "manage_second_factor")
    with transaction.atomic():
        apps_removed = TOTPDevice.objects.filter(user=user, confirmed=True).count()
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        SecurityKey.objects.filter(user=user).delete()
        audit.record(
            "second_factor.reset",
            actor=by,
            request=request,
            after={"username": user.get_username(), "apps_removed": apps_removed},
        )
    return apps_removed


def set_required(value: str, *, by: User, request: HttpRequest | None = None) -> SiteSecurity:
    access.require_site(by, "manage_second_factor")
    if value not in SecondFactorRequired.values:
        raise ValidationError(
            {
                "second_factor_required": (
                    f"{value!r} is not one of {', '.join(SecondFactorRequired.values)}."
                )
            }
        )
    with transaction.atomic():
        site = SiteSecurity.objects.select_for_update().get_or_create(pk=1)[0]
        before = site.second_factor_required
        site.second_factor_required = value
        site.save(update_fields=["second_factor_required", "updated_at"])
        if before != value:
            audit.record(
                "second_factor.required",
                actor=by,
                request=request,
                before={"second_factor_required": before},
                after={"second_factor_required": value},
            )
    return site


# -- checking a code ------------------------------------------------------------------------------------


def verify(user: User, code: str) -> str | None:
    """The method a code proves (totp, recovery), or None. A code works once."""
    code = _normal(code)
    if not code:
        return None
    for device in apps(user):
        step = _totp_step(device, code)
        if step is not None and _take_step(device, step):
            return Method.TOTP
    used = StaticToken.objects.filter(
        device__user=user, device__confirmed=True, token=code
    ).delete()[0]
    return Method.RECOVERY if used else None


def check(
    user: User,
    code: str,
    *,
    request: HttpRequest | None,
    field: str = "code",
    purpose: str = "",
) -> str:
    """The method of a right code; ValidationError keyed by `field` for a missing or wrong
    one, or while the lockout refuses this username from this address."""
    username = user.get_username()
    lock = lockout.current_lock(username, client_ip(request))
    if lock:
        raise ValidationError({field: lock.message}, code="locked")
    if not _normal(code):
        raise ValidationError(
            {field: "Enter the 6-digit code of your authenticator app, or a recovery code."},
            code="required",
        )
    method = verify(user, code)
    if method is None:
        credentials = {"username": username, "method": _method_tried(code)}
        if purpose:
            credentials["purpose"] = purpose
        user_login_failed.send(sender=__name__, credentials=credentials, request=request)
        raise ValidationError({field: "That code is wrong or was already used."}, code="invalid")
    return method


def _method_tried(code: str) -> str:
    return Method.TOTP if _normal(code).isdigit() else Method.RECOVERY


def fresh_code_for_approval(approver: User, request: HttpRequest | None, otp: str | None) -> None:
    """An approver with a second factor proves it again to approve (field `otp`)."""
    if has_second_factor(approver):
        check(approver, otp or "", request=request, field="otp", purpose="approval")
