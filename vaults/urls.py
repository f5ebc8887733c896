"""Vault pages, under /vaults/. Every view asks `vaults.access.get_vault` first."""

from django.urls import path

from jobs import views as job_views
from policies import views as policy_views
from vaults import views

urlpatterns = [
    path("", views.vault_list, name="vault-list"),
    path("new/", views.vault_create, name="vault-create"),
    path("<str:name>/", views.vault_detail, name="vault-detail"),
    path("<str:name>/settings/", views.vault_settings, name="vault-settings"),
    path("<str:name>/delete/", views.vault_delete, name="vault-delete"),
    path("<str:name>/encryption/", views.vault_encryption, name="vault-encryption"),
    path("<str:name>/recycle-bin/", views.vault_recycle_bin, name="vault-recycle-bin"),
    path("<str:name>/items/", views.item_list, name="item-list"),
    path("<str:name>/items/<str:vm_name>/", views.item_detail, name="item-detail"),
    path("<str:name>/items/<str:vm_name>/backup/", views.item_backup_now, name="item-backup-now"),
    path("<str:name>/items/<str:vm_name>/stop/", views.item_stop, name="item-stop"),
    path("<str:name>/items/<str:vm_name>/resume/", views.item_resume, name="item-resume"),
    path(
        "<str:name>/items/<str:vm_name>/policy/",
        views.item_change_policy,
        name="item-change-policy",
    ),
    path("<str:name>/items/<str:vm_name>/undelete/", views.item_undelete, name="item-undelete"),
    path("<str:name>/items/<str:vm_name>/purge/", views.item_purge, name="item-purge"),
    path(
        "<str:name>/items/<str:vm_name>/repair-extension/",
        views.item_repair_extension,
        name="item-repair-extension",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/restore/",
        views.rp_restore,
        name="rp-restore",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/",
        views.rp_files,
        name="rp-files",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/session/",
        views.rp_files_session,
        name="rp-files-session",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/session/end/",
        views.rp_files_session_end,
        name="rp-files-session-end",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/download/",
        views.rp_files_download,
        name="rp-files-download",
    ),
    path("<str:name>/protect/", views.protect, name="vault-protect"),
    path("<str:name>/access/", views.access_page, name="vault-access"),
    path("<str:name>/access/members/add/", views.member_add, name="vault-member-add"),
    path(
        "<str:name>/access/members/<int:pk>/remove/",
        views.member_remove,
        name="vault-member-remove",
    ),
    path("<str:name>/access/guards/add/", views.guard_add, name="vault-guard-add"),
    path(
        "<str:name>/access/guards/<int:pk>/remove/",
        views.guard_remove,
        name="vault-guard-remove",
    ),
    path("<str:name>/access/hosts/link/", views.host_link, name="vault-host-link"),
    path(
        "<str:name>/access/hosts/<int:pk>/unlink/",
        views.host_unlink,
        name="vault-host-unlink",
    ),
    path("<str:name>/policies/", policy_views.policy_list, name="policy-list"),
    path("<str:name>/policies/new/", policy_views.policy_create, name="policy-create"),
    path("<str:name>/policies/<str:policy>/edit/", policy_views.policy_edit, name="policy-edit"),
    path(
        "<str:name>/policies/<str:policy>/delete/",
        policy_views.policy_delete,
        name="policy-delete",
    ),
    path("<str:name>/jobs/", job_views.job_list, name="job-list"),
    path("<str:name>/jobs/<int:job_id>/", job_views.job_detail, name="job-detail"),
    path("<str:name>/jobs/<int:job_id>/cancel/", job_views.job_cancel, name="job-cancel"),
]
