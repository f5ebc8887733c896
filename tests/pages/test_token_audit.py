"""A token made or revoked on the tokens page is audited as the API audits it: one rule for
issuing and revoking, whichever door is used."""

import pytest
from django.urls import reverse

from portal.models import ApiToken
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_token_made_on_the_page_is_audited_with_its_name_and_prefix(login, reader):
    login(reader).post(reverse("account-tokens"), {"name": "report script"})
    token = ApiToken.objects.get(user=reader)
    event = AuditEvent.objects.get(action="token.create", object_id=str(token.pk))
    assert event.actor == reader
    assert event.after == {"name": "report script", "prefix": token.prefix}


def test_a_token_revoked_on_the_page_is_audited_with_its_name_and_prefix(login, reader):
    token, _ = ApiToken.issue(reader, "old")
    login(reader).post(reverse("account-token-revoke", args=[token.pk]))
    event = AuditEvent.objects.get(action="token.revoke", object_id=str(token.pk))
    assert event.actor == reader
    assert event.after == {"name": "old", "prefix": token.prefix}
