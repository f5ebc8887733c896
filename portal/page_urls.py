"""Every server-rendered page. Each pattern is named; the permission-matrix test lists them."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from inventory import views as inventory_views
from portal import monitoring, report_views, views
from security.login_views import PasswordStep
from vaults.views import recycle_bin as recycle_bin_views
from vaults.views import targets as target_views

urlpatterns = [
    # The password step; a user with a second factor goes on to `login-code`.
    path("login/", PasswordStep.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("reports/", report_views.report_list, name="report-list"),
    path("reports/<slug:slug>/", report_views.report_detail, name="report-detail"),
    path("healthz", monitoring.healthz, name="healthz"),
    path("metrics", monitoring.prometheus, name="metrics"),
    path("health/", views.health_page, name="site-health"),
    path("account/tokens/", views.tokens, name="account-tokens"),
    path("account/tokens/<int:pk>/revoke/", views.token_revoke, name="account-token-revoke"),
    path("vaults/", include("vaults.urls")),
    path("recycle-bin/", recycle_bin_views.site_recycle_bin, name="site-recycle-bin"),
    path("", include("security.urls")),
    path("", include("identity.urls")),
    path("inventory/hosts/", inventory_views.host_list, name="host-list"),
    path("inventory/hosts/new/", inventory_views.host_create, name="host-create"),
    path("inventory/hosts/<str:name>/", inventory_views.host_detail, name="host-detail"),
    path("inventory/hosts/<str:name>/edit/", inventory_views.host_edit, name="host-edit"),
    path(
        "inventory/hosts/<str:name>/test-connection/",
        inventory_views.host_test_connection,
        name="host-test-connection",
    ),
    path(
        "inventory/hosts/<str:name>/discover/",
        inventory_views.host_discover,
        name="host-discover",
    ),
    path("storage-targets/", target_views.target_list, name="target-list"),
    path("storage-targets/new/", target_views.target_create, name="target-create"),
    path("storage-targets/<str:name>/", target_views.target_edit, name="target-edit"),
    path("storage-targets/<str:name>/delete/", target_views.target_delete, name="target-delete"),
    path("storage-targets/<str:name>/test/", target_views.target_test, name="target-test"),
    path(
        "storage-targets/<str:name>/tests/<int:job_id>/",
        target_views.target_test_result,
        name="target-test-result",
    ),
    path("inventory/vms/", inventory_views.vm_list, name="vm-list"),
    path("inventory/vms/new/", inventory_views.vm_create, name="vm-create"),
    path("inventory/vms/<str:name>/", inventory_views.vm_detail, name="vm-detail"),
    path("inventory/vms/<str:name>/edit/", inventory_views.vm_edit, name="vm-edit"),
]
