from django.urls import path

from security.api import second_factor, views

V = "vaults/<str:vault_name>"
APPROVAL = f"{V}/approvals/<int:approval_id>"
ALERT = f"{V}/alerts/<int:alert_id>"

urlpatterns = [
    path(f"{V}/approvals/", views.ApprovalList.as_view(), name="api-approval-list"),
    path(f"{APPROVAL}/", views.ApprovalDetail.as_view(), name="api-approval-detail"),
    path(f"{APPROVAL}/approve/", views.ApprovalApprove.as_view(), name="api-approval-approve"),
    path(f"{APPROVAL}/reject/", views.ApprovalReject.as_view(), name="api-approval-reject"),
    path(f"{V}/alerts/", views.AlertList.as_view(), name="api-alert-list"),
    path(f"{ALERT}/", views.AlertDetail.as_view(), name="api-alert-detail"),
    path(f"{ALERT}/acknowledge/", views.AlertAcknowledge.as_view(), name="api-alert-acknowledge"),
    path(f"{ALERT}/resolve/", views.AlertResolve.as_view(), name="api-alert-resolve"),
    path(f"{V}/alert-settings/", views.AlertSettings.as_view(), name="api-alert-settings"),
    path("alerts/active-count/", views.AlertCount.as_view(), name="api-alert-count"),
    path(f"{V}/audit/", views.VaultAuditList.as_view(), name="api-vault-audit-list"),
    path(f"{V}/audit/export/", views.VaultAuditExport.as_view(), name="api-vault-audit-export"),
    path("audit/", views.SiteAuditList.as_view(), name="api-audit-list"),
    path("audit/export/", views.SiteAuditExport.as_view(), name="api-audit-export"),
    path("keys/", views.KeyList.as_view(), name="api-key-list"),
    path("keys/<str:key_name>/", views.KeyDetail.as_view(), name="api-key-detail"),
    path("keys/<str:key_name>/rotate/", views.KeyRotate.as_view(), name="api-key-rotate"),
    path(
        "second-factor/",
        second_factor.SecondFactorSettingView.as_view(),
        name="api-second-factor-setting",
    ),
    path(
        "users/<str:username>/second-factor/reset/",
        second_factor.SecondFactorResetView.as_view(),
        name="api-second-factor-reset",
    ),
]
