from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path

# The admin site signs in through Lifeboat's own login (lockout, second factor), never its
# own password-only form: an anonymous visitor is sent there first.
admin.site.login = login_required(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("portal.api_urls")),
    path("", include("portal.page_urls")),
]
