from django.urls import path

from jobs.api import views

urlpatterns = [
    path("vaults/<str:vault_name>/jobs/", views.JobListView.as_view(), name="api-job-list"),
    path(
        "vaults/<str:vault_name>/jobs/<int:job_id>/",
        views.JobDetailView.as_view(),
        name="api-job-detail",
    ),
    path(
        "vaults/<str:vault_name>/jobs/<int:job_id>/cancel/",
        views.JobCancelView.as_view(),
        name="api-job-cancel",
    ),
]
