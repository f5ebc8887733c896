from django.urls import path

from policies.api import views

urlpatterns = [
    path(
        "vaults/<str:vault_name>/policies/",
        views.PolicyListView.as_view(),
        name="api-policy-list",
    ),
    # Before the detail route: "simulate" is this operation, not a policy's name.
    path(
        "vaults/<str:vault_name>/policies/simulate/",
        views.PolicySimulateView.as_view(),
        name="api-policy-simulate",
    ),
    path(
        "vaults/<str:vault_name>/policies/<str:policy_name>/",
        views.PolicyDetailView.as_view(),
        name="api-policy-detail",
    ),
]
