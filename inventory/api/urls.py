from django.urls import path

from inventory.api import views

urlpatterns = [
    path("hosts/", views.HostListView.as_view(), name="api-host-list"),
    path("hosts/<int:host_id>/", views.HostDetailView.as_view(), name="api-host-detail"),
    path(
        "hosts/<str:name>/test-connection/",
        views.HostTestConnectionView.as_view(),
        name="api-host-test-connection",
    ),
    path("hosts/<str:name>/discover/", views.HostDiscoverView.as_view(), name="api-host-discover"),
    path("vms/", views.VmListView.as_view(), name="api-vm-list"),
    path("vms/<int:vm_id>/", views.VmDetailView.as_view(), name="api-vm-detail"),
    path(
        "vms/<int:vm_id>/repair-extension/",
        views.VmRepairExtensionView.as_view(),
        name="api-vm-repair-extension",
    ),
]
