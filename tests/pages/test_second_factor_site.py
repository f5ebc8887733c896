"""The site admins' second-factor page: the setting, and every user with their devices."""

import itertools

import pytest
from django.urls import reverse

from security import second_factor
from tests import factories as f

pytestmark = pytest.mark.django_db

_seq = itertools.count()


def test_it_keeps_its_query_budget(assert_query_budget, admin_user):
    def make_rows(n):
        for _ in range(n):
            user = f.make_user(f"u{next(_seq)}")
            f.make_totp(user)
            second_factor.new_recovery_codes(user)

    assert_query_budget(
        admin_user, reverse("second-factor-site"), make_rows, 8, marker='class="user-row"'
    )


def test_it_shows_each_users_devices(client, admin_user, reader):
    f.make_totp(reader)
    f.make_totp(reader, name="tablet")
    second_factor.new_recovery_codes(reader)
    client.force_login(admin_user)
    body = client.get(reverse("second-factor-site")).content.decode()
    row = body[body.index('id="user-reader"') :].split("</tr>")[0]
    assert "<td>2</td>" in row and "<td>10</td>" in row and "Reset" in row
    admin_row = body[body.index('id="user-admin"') :].split("</tr>")[0]
    assert "Reset" not in admin_row  # nothing to reset
