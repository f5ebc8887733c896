"""Second factor of local accounts: enrolment with a computed TOTP code, the code step of the
login, replayed and wrong codes, recovery codes, enforcement by the site setting, the API
token endpoint, site admins' reset — and the audit record of every sign-in."""

import re
from base64 import b32decode

import pytest
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.models import ApiToken
from security import second_factor
from security.models import LoginFailure, SiteSecurity
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

IP = "10.0.0.7"


def password_step(client, username="reader", password="pw-secret-1"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=IP
    )


def code_step(client, code):
    return client.post(reverse("login-code"), {"code": code}, REMOTE_ADDR=IP)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def logins(**after):
    return [
        e.after
        for e in AuditEvent.objects.filter(action__startswith="login.").order_by("id")
        if all(e.after.get(k) == v for k, v in after.items())
    ]


def enrol_through_the_page(client, user):
    """Add an authenticator app as a person does: read the secret off the page, type a code."""
    client.force_login(user)
    page = client.get(reverse("account-second-factor-app"))
    assert page.status_code == 200
    body = page.content.decode()
    assert "<svg" in body  # the QR code, inline
    secret = re.search(r'id="secret">([A-Z2-7 ]+)<', body).group(1).replace(" ", "")
    hex_key = b32decode(secret).hex()
    done = client.post(
        reverse("account-second-factor-app"),
        {"name": "work phone", "code": f.totp_code(hex_key)},
        REMOTE_ADDR=IP,
    )
    return hex_key, done


def test_enrolment_then_login_asks_for_the_code(client, reader):
    hex_key, done = enrol_through_the_page(client, reader)
    assert done.status_code == 200
    codes = re.search(r'id="recovery-codes">([^<]+)<', done.content.decode()).group(1).split()
    assert len(codes) == second_factor.RECOVERY_CODES
    assert done["Cache-Control"] == "no-store"
    device = TOTPDevice.objects.get(user=reader)
    assert device.confirmed and device.name == "work phone"
    enrol = AuditEvent.objects.get(action="second_factor.enrol")
    assert enrol.after == {"username": "reader", "kind": "totp", "name": "work phone"}
    # Shown once: the page afterwards says how many are left, never which.
    page = client.get(reverse("account-second-factor")).content.decode()
    assert "10 recovery codes left" in page and codes[0] not in page

    client.logout()
    before = client.session.session_key  # a visitor's session, as a fixing attacker gives
    r = password_step(client)
    assert r.status_code == 302 and r.url == reverse("login-code")
    assert not signed_in(client)  # the password alone signs nobody in
    assert client.session.session_key != before  # a new id for the half-way state
    assert client.get(reverse("dashboard")).status_code == 302

    # The next time step's code: the one typed at enrolment was used up.
    r = code_step(client, f.totp_code(hex_key, steps=1))
    assert r.status_code == 302 and r.url == reverse("dashboard")
    assert signed_in(client)
    ok = AuditEvent.objects.filter(action="login.success").latest("id")
    assert ok.after == {"method": "totp", "first_factor": "password"}
    assert ok.source_ip == IP and ok.actor == reader


def test_a_replayed_code_is_refused(client, reader):
    device = f.make_totp(reader)
    code = f.totp_code(device)
    password_step(client)
    assert code_step(client, code).status_code == 302
    client.logout()
    password_step(client)
    r = code_step(client, code)
    assert r.status_code == 200 and "wrong or was already used" in r.content.decode()
    assert not signed_in(client)
    assert logins(method="totp")[-1]["username"] == "reader"
    assert AuditEvent.objects.filter(action="login.failure", after__method="totp").count() == 1


def test_wrong_codes_count_for_the_lockout(client, reader):
    device = f.make_totp(reader)
    password_step(client)
    for _ in range(5):
        r = code_step(client, "000000" if f.totp_code(device) != "000000" else "111111")
        assert r.status_code == 200 and not signed_in(client)
    assert LoginFailure.objects.filter(username="reader", ip=IP).count() == 5
    # Locked: the right code is refused now, and so is the password.
    r = code_step(client, f.totp_code(device))
    assert "Too many failed sign-ins" in r.content.decode() and not signed_in(client)
    assert AuditEvent.objects.filter(action="login.lockout").count() == 1
    r = password_step(client)
    assert r.status_code == 200 and "Too many failed sign-ins" in r.content.decode()


def test_the_code_step_needs_the_password_step_first(client, reader):
    f.make_totp(reader)
    r = code_step(client, "123456")
    assert r.status_code == 302 and r.url == reverse("login")
    assert not signed_in(client)


def test_a_recovery_code_works_once(client, reader):
    f.make_totp(reader)
    codes = second_factor.new_recovery_codes(reader)
    password_step(client)
    r = code_step(client, codes[3].upper())  # typed as printed or not
    assert r.status_code == 302 and signed_in(client)
    ok = AuditEvent.objects.filter(action="login.success").latest("id")
    assert ok.after["method"] == "recovery" and ok.actor == reader
    assert StaticToken.objects.filter(device__user=reader).count() == 9
    client.logout()
    password_step(client)
    r = code_step(client, codes[3])
    assert r.status_code == 200 and not signed_in(client)
    assert logins(method="recovery")[-1] == {"username": "reader", "method": "recovery"}


def test_a_user_without_a_second_factor_signs_in_with_the_password(client, reader):
    r = password_step(client)
    assert r.status_code == 302 and r.url == reverse("dashboard") and signed_in(client)
    assert logins() == [{"method": "password"}]
    password_step(client, password="wrong")
    assert logins()[-1] == {"username": "reader", "method": "password"}
    assert AuditEvent.objects.filter(action="login.failure").get().source_ip == IP


@pytest.mark.parametrize(
    ("setting", "asked"),
    [("everyone", {"reader", "admin"}), ("site_admins", {"admin"}), ("nobody", set())],
)
def test_the_site_setting_sends_users_without_one_to_enrolment(
    client, reader, admin_user, setting, asked
):
    SiteSecurity.objects.update_or_create(pk=1, defaults={"second_factor_required": setting})
    for user in ("reader", "admin"):
        client.logout()
        r = password_step(client, user)
        assert signed_in(client)
        enrol_page = reverse("account-second-factor")
        if user in asked:
            assert r.url == enrol_page
            # Anything else sends them back there; the API refuses their session.
            assert client.get(reverse("vault-list")).url == enrol_page
            api = client.get(reverse("api-vault-list"))
            assert api.status_code == 403 and "second factor" in api.json()["detail"]
            assert client.get(enrol_page).status_code == 200
        else:
            assert r.url == reverse("dashboard")
            assert client.get(reverse("vault-list")).status_code == 200


def test_enrolling_lets_a_required_user_in(client, reader):
    SiteSecurity.objects.update_or_create(pk=1, defaults={"second_factor_required": "everyone"})
    password_step(client)
    assert client.get(reverse("dashboard")).status_code == 302
    _key, done = enrol_through_the_page(client, reader)
    assert done.status_code == 200
    assert client.get(reverse("dashboard")).status_code == 200


def test_directory_accounts_are_not_asked(reader):
    SiteSecurity.objects.update_or_create(pk=1, defaults={"second_factor_required": "everyone"})
    assert second_factor.must_enrol(reader)
    reader.set_unusable_password()
    assert not second_factor.must_enrol(reader)


def test_a_wrong_enrolment_code_names_the_field(client, reader):
    client.force_login(reader)
    client.get(reverse("account-second-factor-app"))
    r = client.post(reverse("account-second-factor-app"), {"code": "12"})
    assert r.status_code == 400
    assert "does not match" in r.context["form"].errors["code"][0]
    assert not TOTPDevice.objects.filter(user=reader, confirmed=True).exists()


def test_removing_the_last_app_removes_the_recovery_codes(client, reader):
    device = f.make_totp(reader)
    second_factor.new_recovery_codes(reader)
    client.force_login(reader)
    url = reverse("account-second-factor-remove", args=[device.pk])
    # A session alone does not take the second factor away: a current code does.
    r = client.post(url, follow=True)
    assert "Not removed: Enter the 6-digit code" in r.content.decode()
    assert TOTPDevice.objects.filter(user=reader).exists()
    r = client.post(url, {"code": f.totp_code(device)})
    assert r.status_code == 302
    assert not TOTPDevice.objects.filter(user=reader).exists()
    assert not StaticToken.objects.exists()
    removed = AuditEvent.objects.get(action="second_factor.remove")
    assert removed.after["recovery_codes_removed"] is True
    # Nobody removes another's app.
    other = f.make_totp(f.make_user("other"))
    assert client.post(reverse("account-second-factor-remove", args=[other.pk])).status_code == 404


def test_new_recovery_codes_replace_the_old(client, reader):
    device = f.make_totp(reader)
    old = second_factor.new_recovery_codes(reader)
    client.force_login(reader)
    r = client.post(reverse("account-recovery-codes"), {"code": "12"}, follow=True)
    assert "No new recovery codes" in r.content.decode()
    assert second_factor.recovery_codes_left(reader) == 10
    r = client.post(reverse("account-recovery-codes"), {"code": f.totp_code(device)})
    new = re.search(r'id="recovery-codes">([^<]+)<', r.content.decode()).group(1).split()
    assert len(new) == 10 and not set(new) & set(old)
    assert second_factor.verify(reader, old[0]) is None
    assert second_factor.verify(reader, new[0]) == "recovery"


def test_site_admin_resets_a_users_devices(client, admin_user, reader):
    f.make_totp(reader)
    second_factor.new_recovery_codes(reader)
    client.force_login(admin_user)
    page = client.get(reverse("second-factor-site"))
    assert page.status_code == 200 and 'id="user-reader"' in page.content.decode()
    r = client.post(reverse("second-factor-reset", args=["reader"]))
    assert r.status_code == 302
    assert not second_factor.has_second_factor(reader)
    assert not StaticToken.objects.exists()
    reset = AuditEvent.objects.get(action="second_factor.reset")
    assert reset.actor == admin_user and reset.after == {"username": "reader", "apps_removed": 1}


def test_site_admin_changes_the_setting(client, admin_user):
    client.force_login(admin_user)
    r = client.post(reverse("second-factor-site"), {"second_factor_required": "site_admins"})
    assert r.status_code == 302
    assert second_factor.required() == "site_admins"
    change = AuditEvent.objects.get(action="second_factor.required")
    assert change.before == {"second_factor_required": "nobody"}
    assert change.after == {"second_factor_required": "site_admins"}
    r = client.post(reverse("second-factor-site"), {"second_factor_required": "all"})
    assert r.status_code == 400 and "second_factor_required" in r.context["form"].errors


# -- API: tokens are the machine path --------------------------------------------------------


def token(api, username="reader", **extra):
    body = {"username": username, "password": "pw-secret-1", **extra}
    return api().post(reverse("api-token-obtain"), body, REMOTE_ADDR=IP)


def test_a_token_for_a_user_with_a_second_factor_needs_the_code(api, reader):
    device = f.make_totp(reader)
    r = token(api)
    assert r.status_code == 400 and "otp" in r.data
    r = token(api, otp="000000" if f.totp_code(device) != "000000" else "111111")
    assert r.status_code == 400 and "otp" in r.data
    assert LoginFailure.objects.filter(username="reader").count() == 1  # a missing code is no guess
    r = token(api, otp=f.totp_code(device))
    assert r.status_code == 201
    ok = AuditEvent.objects.filter(action="login.success").latest("id")
    assert ok.after == {"method": "totp", "door": "api"} and ok.actor == reader
    # The token itself works alone, as every token does.
    auth = {"HTTP_AUTHORIZATION": f"Token {r.data['token']}"}
    assert api().get(reverse("api-vault-list"), **auth).status_code == 200
    assert ApiToken.objects.filter(user=reader).count() == 1


def test_no_token_for_a_required_user_without_a_second_factor(api, reader):
    SiteSecurity.objects.update_or_create(pk=1, defaults={"second_factor_required": "everyone"})
    r = token(api)
    assert r.status_code == 403 and "second factor" in r.data["detail"]
    assert not ApiToken.objects.exists()


def test_site_admin_api(api, admin_user, reader):
    url = reverse("api-second-factor-setting")
    assert api(admin_user).get(url).data == {"second_factor_required": "nobody"}
    r = api(admin_user).put(url, {"second_factor_required": "everyone"})
    assert r.status_code == 200 and second_factor.required() == "everyone"
    r = api(admin_user).put(url, {"second_factor_required": "some"})
    assert r.status_code == 400 and "second_factor_required" in r.data
    assert api(reader).put(url, {"second_factor_required": "nobody"}).status_code == 403
    f.make_totp(reader)
    r = api(admin_user).post(reverse("api-second-factor-reset", args=["reader"]))
    assert r.status_code == 200 and r.data == {"apps_removed": 1}
    assert (
        api(admin_user).post(reverse("api-second-factor-reset", args=["nobody"])).status_code == 404
    )


def test_the_admin_site_signs_in_through_the_two_steps(client, admin_user):
    f.make_totp(admin_user)
    r = client.get("/admin/login/")
    assert r.status_code == 302 and r.url.startswith(reverse("login"))
    # Its own password-only form is never shown, so a password alone opens nothing.
    r = client.post(
        "/admin/login/", {"username": "admin", "password": "pw-secret-1"}, REMOTE_ADDR=IP
    )
    assert r.status_code == 302 and not signed_in(client)
