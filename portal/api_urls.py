"""The REST API under /api/: version 1 under v1/, the OpenAPI schema and its docs.

Every route has a unique name (`api-<thing>-list` / `api-<thing>-detail`): the permission
matrix test enumerates them by name.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

v1 = [
    path("", include("portal.api.urls")),
    path("", include("vaults.api.urls")),
    path("", include("policies.api.urls")),
    path("", include("inventory.api.urls")),
    path("", include("jobs.api.urls")),
    path("", include("security.api.urls")),
    path("", include("identity.api.urls")),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
