from django.urls import path

from identity import views

urlpatterns = [
    path("directories/", views.directory_list, name="directory-list"),
    path("directories/new/", views.directory_create, name="directory-create"),
    path("directories/<str:name>/", views.directory_edit, name="directory-edit"),
    path("directories/<str:name>/delete/", views.directory_delete, name="directory-delete"),
    path("group-mappings/new/", views.mapping_create, name="group-mapping-create"),
    path("group-mappings/<int:pk>/delete/", views.mapping_delete, name="group-mapping-delete"),
    path("login/oidc/<str:name>/", views.oidc_start, name="oidc-login"),
    path("login/oidc/<str:name>/callback/", views.oidc_callback, name="oidc-callback"),
]
