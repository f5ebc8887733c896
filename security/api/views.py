"""MUA approvals, customer-managed keys, alerts and the audit log over REST.

Who may do what (DESIGN §2; decided in `vaults.access` and `security.mua`):

- approvals: list/detail — guard approvers of the vault and members who may change settings
  (contributor+, site admins); approve/reject — guard approvers only, never the requester.
- keys: list/detail — any signed-in user (names only; paths and fingerprints for site
  admins); register, enable/disable, rotate — site admins.
- alerts: list/detail — readers+; acknowledge — operators+; resolve — contributors+; alert
  settings — read by readers+, changed by contributors+.
- audit: a vault's log — owners and site admins (`view_audit`); the whole log — site admins.
"""

import csv
import json
from collections.abc import Iterator, Mapping
from typing import Any, cast

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, serializers, status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.base import ApiListView, ApiView
from security import alerts, keys, mua
from security.api.serializers import (
    AlertCountSerializer,
    AlertFilterSerializer,
    AlertSerializer,
    AlertSettingsSerializer,
    ApprovalFilterSerializer,
    ApprovalSerializer,
    AuditEventSerializer,
    DecisionSerializer,
    KeyCreateSerializer,
    KeyPublicSerializer,
    KeyRotateResultSerializer,
    KeyRotateSerializer,
    KeySerializer,
    KeyUpdateSerializer,
)
from security.audit_log import AuditFilterSerializer, SiteAuditFilterSerializer, filter_audit
from security.models import Alert, Approval, ApprovalStatus, CustomerKey, VaultAlertSettings
from vaults import access
from vaults.models import AuditEvent, Vault


def _body(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data if request.data is not None else {})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _caller(request: Request) -> User:
    """The signed-in caller (every view here requires IsAuthenticated first)."""
    user = request.user
    if not user.is_authenticated:
        raise NotAuthenticated()
    return user


def _url_vault(view: ApiView) -> Vault:
    """The vault the URL names: VaultAccess resolved it, and checked the caller, before any
    handler runs."""
    return cast(Vault, view.vault)


# -- approvals -------------------------------------------------------------------------------------


class _ApprovalView(ApiView):
    """Guard approvers are not members: the vault is resolved here, not by VaultAccess."""

    permission_classes = [IsAuthenticated]
    serializer_class = ApprovalSerializer

    approval_vault: Vault

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        vault = Vault.objects.filter(name=kwargs.get("vault_name")).first()
        if vault is None:
            raise Http404("No such vault.")
        self.approval_vault = vault
        self.check_vault(_caller(request))

    def check_vault(self, user: User) -> None:
        mua.require_view_approvals(user, self.approval_vault)

    def get_queryset(self) -> QuerySet[Approval]:
        if self.schema_only:
            return Approval.objects.none()
        return Approval.objects.filter(vault=self.approval_vault).select_related(
            "vault", "decided_by"
        )

    def get_approval(self, approval_id: int) -> Approval:
        approval = self.get_queryset().filter(pk=approval_id).first()
        if approval is None:
            raise Http404("No such approval request.")
        return approval


class ApprovalList(_ApprovalView):
    @extend_schema(parameters=[ApprovalFilterSerializer], responses=ApprovalSerializer(many=True))
    def get(self, request: Request, vault_name: str) -> Response:
        """The vault's approval requests, newest first (`?status=` filters)."""
        qs = self.get_queryset()
        wanted = ApprovalFilterSerializer.values(request.query_params).get("status")
        now = timezone.now()
        if wanted == ApprovalStatus.PENDING:
            qs = qs.filter(status=wanted, expires_at__gt=now)
        elif wanted == ApprovalStatus.EXPIRED:
            qs = qs.filter(status__in=[ApprovalStatus.PENDING, wanted]).exclude(
                status=ApprovalStatus.PENDING, expires_at__gt=now
            )
        elif wanted:
            qs = qs.filter(status=wanted)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class ApprovalDetail(_ApprovalView):
    def get(self, request: Request, vault_name: str, approval_id: int) -> Response:
        return Response(self.get_serializer(self.get_approval(approval_id)).data)


class _Decision(_ApprovalView):
    def check_vault(self, user: User) -> None:
        # Deciding is checked per request by mua.require_decide (guard approver, not requester).
        vault = self.approval_vault
        if not mua.is_guard(user, vault) and access.role_of(user, vault) is None:
            raise Http404("No such vault.")


class ApprovalApprove(_Decision):
    @extend_schema(request=DecisionSerializer, responses={200: ApprovalSerializer})
    def post(self, request: Request, vault_name: str, approval_id: int) -> Response:
        """Approve (guard approvers other than the requester): the operation runs at once on
        behalf of the requester. An approver with a second factor sends a fresh code as `otp`
        (400 naming `otp` when it is missing or wrong). 409 when the request is no longer
        pending or the operation cannot run any more."""
        data = _body(DecisionSerializer, request)
        approval = mua.approve(
            self.get_approval(approval_id),
            by=_caller(request),
            request=request,
            note=data["note"],
            otp=data["otp"],
        )
        return Response(self.get_serializer(approval).data)


class ApprovalReject(_Decision):
    @extend_schema(request=DecisionSerializer, responses={200: ApprovalSerializer})
    def post(self, request: Request, vault_name: str, approval_id: int) -> Response:
        """Reject (guard approvers other than the requester); nothing runs."""
        data = _body(DecisionSerializer, request)
        approval = mua.reject(
            self.get_approval(approval_id), by=_caller(request), request=request, note=data["note"]
        )
        return Response(self.get_serializer(approval).data)


# -- keys ---------------------------------------------------------------------------------------------


class KeyList(ApiListView):
    site_actions = {"POST": "manage_keys"}

    def get_serializer_class(self) -> type[serializers.ModelSerializer]:
        if access.is_site_admin(self.request.user):
            return KeySerializer
        return KeyPublicSerializer

    def get_queryset(self) -> QuerySet[CustomerKey]:
        return CustomerKey.objects.prefetch_related("assignments__vault").order_by("name")

    @extend_schema(responses=KeySerializer(many=True))
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Registered customer-managed keys (site admins see paths, fingerprints, vaults)."""
        return self.list(request, *args, **kwargs)

    @extend_schema(request=KeyCreateSerializer, responses={201: KeySerializer})
    def post(self, request: Request) -> Response:
        """Register a key by reference to a file on the server (site admins)."""
        data = _body(KeyCreateSerializer, request)
        key = keys.register_key(
            by=_caller(request), request=request, name=data["name"], path=data["path"]
        )
        return Response(KeySerializer(key).data, status=status.HTTP_201_CREATED)


class KeyDetail(ApiView):
    serializer_class = KeySerializer

    def get_key(self, key_name: str) -> CustomerKey:
        keys_ = CustomerKey.objects.prefetch_related("assignments__vault")
        key = keys_.filter(name=key_name).first()
        if key is None:
            raise Http404("No such key.")
        return key

    @extend_schema(responses=KeySerializer)
    def get(self, request: Request, key_name: str) -> Response:
        key = self.get_key(key_name)
        if access.is_site_admin(request.user):
            return Response(KeySerializer(key).data)
        return Response(KeyPublicSerializer(key).data)

    @extend_schema(request=KeyUpdateSerializer, responses=KeySerializer)
    def patch(self, request: Request, key_name: str) -> Response:
        """Disable or re-enable the key (site admins)."""
        access.require_site(request.user, "manage_keys")
        key = self.get_key(key_name)
        data = _body(KeyUpdateSerializer, request)
        key = keys.set_key_enabled(key, data["enabled"], by=_caller(request), request=request)
        return Response(KeySerializer(self.get_key(key.name)).data)


class KeyRotate(ApiView):
    site_actions = {"POST": "manage_keys"}
    serializer_class = KeyRotateSerializer

    @extend_schema(request=KeyRotateSerializer, responses={202: KeyRotateResultSerializer})
    def post(self, request: Request, key_name: str) -> Response:
        """Point the key at a new file; one update_key job per vault re-wraps its stores."""
        key = CustomerKey.objects.filter(name=key_name).first()
        if key is None:
            raise Http404("No such key.")
        data = _body(KeyRotateSerializer, request)
        jobs = keys.rotate_key(key, by=_caller(request), request=request, path=data["path"])
        key = CustomerKey.objects.prefetch_related("assignments__vault").get(pk=key.pk)
        return Response(
            {"key": KeySerializer(key).data, "jobs": [j.pk for j in jobs]},
            status=status.HTTP_202_ACCEPTED,
        )


# -- alerts ---------------------------------------------------------------------------------------------


class AlertList(ApiListView):
    serializer_class = AlertSerializer
    vault_actions = {"GET": "view"}

    def get_queryset(self) -> QuerySet[Alert]:
        if self.schema_only:
            return Alert.objects.none()
        qs = Alert.objects.filter(vault=_url_vault(self)).select_related(
            "acknowledged_by", "resolved_by"
        )
        return qs.filter(**AlertFilterSerializer.values(self.request.query_params))

    @extend_schema(parameters=[AlertFilterSerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The vault's alerts, newest first."""
        return self.list(request, *args, **kwargs)


class _AlertView(ApiView):
    serializer_class = AlertSerializer

    def get_alert(self, alert_id: int) -> Alert:
        alert = (
            Alert.objects.filter(vault=_url_vault(self), pk=alert_id)
            .select_related("vault")
            .first()
        )
        if alert is None:
            raise Http404("No such alert.")
        return alert


class AlertDetail(_AlertView):
    vault_actions = {"GET": "view"}

    def get(self, request: Request, vault_name: str, alert_id: int) -> Response:
        return Response(self.get_serializer(self.get_alert(alert_id)).data)


class AlertAcknowledge(_AlertView):
    vault_actions = {"POST": "acknowledge_alert"}

    @extend_schema(request=None, responses=AlertSerializer)
    def post(self, request: Request, vault_name: str, alert_id: int) -> Response:
        """Acknowledge an active alert (operators and above)."""
        alert = alerts.acknowledge(self.get_alert(alert_id), by=_caller(request), request=request)
        return Response(self.get_serializer(alert).data)


class AlertResolve(_AlertView):
    vault_actions = {"POST": "resolve_alert"}

    @extend_schema(request=None, responses=AlertSerializer)
    def post(self, request: Request, vault_name: str, alert_id: int) -> Response:
        """Resolve an alert (contributors and above)."""
        alert = alerts.resolve(self.get_alert(alert_id), by=_caller(request), request=request)
        return Response(self.get_serializer(alert).data)


class AlertSettings(ApiView):
    serializer_class = AlertSettingsSerializer
    vault_actions = {"GET": "view", "PATCH": "change_settings"}

    def _current(self) -> dict[str, bool]:
        s = VaultAlertSettings.objects.filter(vault=_url_vault(self)).first()
        return {"job_alerts": True if s is None else s.job_alerts}

    def get(self, request: Request, vault_name: str) -> Response:
        return Response(self._current())

    def patch(self, request: Request, vault_name: str) -> Response:
        """Turn the vault's Sev-1 job alerts on or off (contributors and above)."""
        data = _body(AlertSettingsSerializer, request)
        alerts.update_settings(
            _url_vault(self), by=_caller(request), request=request, job_alerts=data["job_alerts"]
        )
        return Response(self._current())


class AlertCount(ApiView):
    serializer_class = AlertCountSerializer

    def get(self, request: Request) -> Response:
        """Active alerts in the vaults the caller sees (the navigation badge)."""
        return Response({"active": alerts.active_alert_count(request.user)})


# -- audit ------------------------------------------------------------------------------------------------


class CSVRenderer(renderers.BaseRenderer):
    """Lets `?format=csv` through content negotiation; the views write the CSV themselves."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return json.dumps(data).encode() if data is not None else b""


CSV_COLUMNS = [
    "time",
    "actor",
    "action",
    "vault",
    "object_type",
    "object_id",
    "object",
    "source_ip",
    "before",
    "after",
]


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    # A spreadsheet runs cells that start with these as formulas.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(qs: QuerySet[AuditEvent], filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(CSV_COLUMNS)
        for e in qs.iterator(chunk_size=500):
            # Every cell is escaped, whatever its column: none is safe by construction.
            yield writer.writerow(
                [
                    _cell(value)
                    for value in (
                        e.time.isoformat(),
                        e.actor_name,
                        e.action,
                        e.vault_name,
                        e.object_type,
                        e.object_id,
                        e.object_repr,
                        e.source_ip,
                        e.before,
                        e.after,
                    )
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


FORMAT_PARAM = OpenApiParameter("format", str, description="csv: the whole filtered log as CSV.")


class _AuditList(ApiListView):
    serializer_class = AuditEventSerializer
    renderer_classes = [renderers.JSONRenderer, CSVRenderer]
    export = False
    filters = AuditFilterSerializer

    def base_queryset(self) -> QuerySet[AuditEvent]:
        raise NotImplementedError

    def filename(self) -> str:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[AuditEvent]:
        if self.schema_only:
            return AuditEvent.objects.none()
        return filter_audit(self.base_queryset(), self.request.query_params, self.filters)

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response | StreamingHttpResponse:
        if self.export or request.accepted_renderer.format == "csv":
            return csv_response(self.get_queryset(), self.filename())
        return self.list(request, *args, **kwargs)


class VaultAuditList(_AuditList):
    vault_actions = {"GET": "view_audit"}

    def base_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.filter(vault=_url_vault(self))

    def filename(self) -> str:
        return f"lifeboat-audit-{_url_vault(self).name}-{timezone.now():%Y%m%d-%H%M%S}.csv"

    @extend_schema(parameters=[AuditFilterSerializer, FORMAT_PARAM])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response | StreamingHttpResponse:
        """The vault's audit log, newest first (owners and site admins); `?format=csv` exports
        the whole filtered log."""
        return super().get(request, *args, **kwargs)


class VaultAuditExport(VaultAuditList):
    export = True

    @extend_schema(
        parameters=[AuditFilterSerializer], responses={(200, "text/csv"): OpenApiTypes.STR}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response | StreamingHttpResponse:
        """The vault's filtered audit log as CSV."""
        return _AuditList.get(self, request, *args, **kwargs)


class SiteAuditList(_AuditList):
    site_actions = {"GET": "view_site_audit"}
    filters = SiteAuditFilterSerializer

    def base_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.all()

    def filename(self) -> str:
        return f"lifeboat-audit-{timezone.now():%Y%m%d-%H%M%S}.csv"

    @extend_schema(parameters=[SiteAuditFilterSerializer, FORMAT_PARAM])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response | StreamingHttpResponse:
        """The whole audit log (site admins); `?format=csv` exports it."""
        return super().get(request, *args, **kwargs)


class SiteAuditExport(SiteAuditList):
    export = True

    @extend_schema(
        parameters=[SiteAuditFilterSerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response | StreamingHttpResponse:
        """The whole filtered audit log as CSV (site admins)."""
        return _AuditList.get(self, request, *args, **kwargs)
