"""Security pages (included at the root by `portal/page_urls.py`)."""

from django.urls import path

from security import factor_views, login_views, views

V = "vaults/<str:name>"
APPROVAL = f"{V}/approvals/<int:approval_id>"
ALERT = f"{V}/alerts/<int:alert_id>"

urlpatterns = [
    path("login/code/", login_views.code_step, name="login-code"),
    path("login/code/key/options/", login_views.key_options, name="login-key-options"),
    path("login/code/key/", login_views.key_sign_in, name="login-key"),
    path("account/second-factor/", factor_views.account_page, name="account-second-factor"),
    path("account/second-factor/app/", factor_views.app_enrol, name="account-second-factor-app"),
    path(
        "account/second-factor/recovery-codes/",
        factor_views.recovery_codes,
        name="account-recovery-codes",
    ),
    path(
        "account/second-factor/apps/<int:pk>/remove/",
        factor_views.app_remove,
        name="account-second-factor-remove",
    ),
    path(
        "account/second-factor/keys/options/",
        factor_views.key_options,
        name="account-security-key-options",
    ),
    path("account/second-factor/keys/", factor_views.key_add, name="account-security-key-add"),
    path(
        "account/second-factor/keys/<int:pk>/remove/",
        factor_views.key_remove,
        name="account-security-key-remove",
    ),
    path("second-factor/", factor_views.site_page, name="second-factor-site"),
    path(
        "second-factor/users/<str:username>/reset/",
        factor_views.user_reset,
        name="second-factor-reset",
    ),
    path("approvals/", views.my_approvals, name="my-approvals"),
    path(f"{V}/approvals/", views.approval_list, name="approval-list"),
    path(f"{APPROVAL}/", views.approval_detail, name="approval-detail"),
    path(f"{APPROVAL}/approve/", views.approval_approve, name="approval-approve"),
    path(f"{APPROVAL}/reject/", views.approval_reject, name="approval-reject"),
    path("alerts/", views.site_alerts, name="site-alerts"),
    path(f"{V}/alerts/", views.alert_list, name="alert-list"),
    path(f"{V}/alerts/settings/", views.alert_settings, name="alert-settings"),
    path(f"{ALERT}/acknowledge/", views.alert_acknowledge, name="alert-acknowledge"),
    path(f"{ALERT}/resolve/", views.alert_resolve, name="alert-resolve"),
    path("audit/", views.site_audit, name="site-audit"),
    path(f"{V}/audit/", views.vault_audit, name="vault-audit"),
    path("keys/", views.key_list, name="key-list"),
    path("keys/<str:key_name>/enabled/", views.key_enabled, name="key-enabled"),
    path("keys/<str:key_name>/rotate/", views.key_rotate, name="key-rotate"),
]
