from django.urls import path

from identity.api import views

urlpatterns = [
    path("directories/", views.DirectoryListView.as_view(), name="api-directory-list"),
    path(
        "directories/<str:name>/", views.DirectoryDetailView.as_view(), name="api-directory-detail"
    ),
    path("group-mappings/", views.GroupMappingListView.as_view(), name="api-group-mapping-list"),
    path(
        "group-mappings/<int:mapping_id>/",
        views.GroupMappingDetailView.as_view(),
        name="api-group-mapping-detail",
    ),
]
