from django.urls import path

from portal.api import views

urlpatterns = [
    path("health/", views.HealthView.as_view(), name="api-health"),
    path("auth/token/", views.ObtainTokenView.as_view(), name="api-token-obtain"),
    path("auth/tokens/", views.TokenListView.as_view(), name="api-token-list"),
    path("auth/tokens/<int:token_id>/", views.TokenDetailView.as_view(), name="api-token-detail"),
]
