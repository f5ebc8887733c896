from django.urls import path

from policies.api import views

urlpatterns = [
    path(
        "vaults/<str:vault_name>/policies/",
        views.PolicyListView.as_view(),
        name="api-policy-list",
    ),
    path(
        "vaults/<str:vault_name>/policies/<str:policy_name>/",
        views.PolicyDetailView.as_view(),
        name="api-policy-detail",
    ),
]
