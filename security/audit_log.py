"""Filtering the audit log: one owner for the API's list and export and the audit pages."""

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers

from portal.api.filters import FilterSerializer, MomentField
from vaults.models import AuditEvent


class AuditFilterSerializer(FilterSerializer):
    action = serializers.CharField(
        required=False,
        help_text="Exact action, e.g. vault.update; a trailing dot matches a family (vault.).",
    )
    actor = serializers.CharField(required=False, help_text="Username.")
    object_type = serializers.CharField(
        required=False, help_text="e.g. Vault, ProtectedVM, Approval."
    )
    since = MomentField(required=False, help_text="ISO date or date-time (inclusive).")
    until = MomentField(end=True, required=False, help_text="ISO date or date-time (inclusive).")


class SiteAuditFilterSerializer(AuditFilterSerializer):
    vault = serializers.CharField(required=False, help_text="Vault name.")


def filter_audit(
    qs: QuerySet[AuditEvent],
    params: Mapping[str, Any],
    filters: type[AuditFilterSerializer] = AuditFilterSerializer,
) -> QuerySet[AuditEvent]:
    """`qs` narrowed by the filters in `params`; a bad value raises ValidationError on it."""
    f = filters.values(params)
    if "action" in f:
        action = f["action"]
        qs = (
            qs.filter(action__startswith=action)
            if action.endswith(".")
            else qs.filter(action=action)
        )
    if "actor" in f:
        qs = qs.filter(actor_name=f["actor"])
    if "object_type" in f:
        qs = qs.filter(object_type=f["object_type"])
    if "since" in f:
        qs = qs.filter(time__gte=f["since"])
    if "until" in f:
        qs = qs.filter(time__lte=f["until"])
    if "vault" in f:
        qs = qs.filter(vault_name=f["vault"])
    return qs
