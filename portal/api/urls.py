from django.urls import path

from portal.api import views
from portal.api.reports import report_view
from portal.reports import adherence, items, jobs, usage

# The usage report's rows are per vault, or per VM with `by=vm` (columns of both).
USAGE_COLUMNS = usage.VAULT_COLUMNS + [
    c for c in usage.VM_COLUMNS if c.key not in {v.key for v in usage.VAULT_COLUMNS}
]

urlpatterns = [
    path("health/", views.HealthView.as_view(), name="api-health"),
    path("auth/token/", views.ObtainTokenView.as_view(), name="api-token-obtain"),
    path("auth/tokens/", views.TokenListView.as_view(), name="api-token-list"),
    path("auth/tokens/<int:token_id>/", views.TokenDetailView.as_view(), name="api-token-detail"),
    path(
        "reports/backup-items/",
        report_view("backup-items", items.COLUMNS),
        name="api-report-backup-items",
    ),
    path("reports/usage/", report_view("usage", USAGE_COLUMNS), name="api-report-usage"),
    path("reports/jobs/", report_view("jobs", jobs.COLUMNS), name="api-report-jobs"),
    path(
        "reports/adherence/",
        report_view("adherence", adherence.COLUMNS),
        name="api-report-adherence",
    ),
]
