"""Vault pages, under /vaults/. Every view asks `vaults.access.get_vault` first."""

from django.urls import path

from jobs import views as job_views
from policies import views as policy_views
from vaults.views import (
    access,
    items,
    protection,
    recovery,
    recovery_points,
    recycle_bin,
    settings,
    vault,
)

urlpatterns = [
    path("", vault.vault_list, name="vault-list"),
    path("new/", vault.vault_create, name="vault-create"),
    path("attach/", vault.vault_attach, name="vault-attach"),
    path("<str:name>/", vault.vault_detail, name="vault-detail"),
    path("<str:name>/settings/", settings.vault_settings, name="vault-settings"),
    path("<str:name>/delete/", vault.vault_delete, name="vault-delete"),
    path("<str:name>/encryption/", settings.vault_encryption, name="vault-encryption"),
    path("<str:name>/recycle-bin/", recycle_bin.vault_recycle_bin, name="vault-recycle-bin"),
    path("<str:name>/items/", items.item_list, name="item-list"),
    path("<str:name>/items/<str:vm_name>/", items.item_detail, name="item-detail"),
    path(
        "<str:name>/items/<str:vm_name>/rps/",
        recovery_points.item_rps,
        name="item-rps",
    ),
    path("<str:name>/items/<str:vm_name>/backup/", items.item_backup_now, name="item-backup-now"),
    path("<str:name>/items/<str:vm_name>/stop/", protection.item_stop, name="item-stop"),
    path("<str:name>/items/<str:vm_name>/resume/", protection.item_resume, name="item-resume"),
    path(
        "<str:name>/items/<str:vm_name>/policy/",
        protection.item_change_policy,
        name="item-change-policy",
    ),
    path(
        "<str:name>/items/<str:vm_name>/undelete/", recycle_bin.item_undelete, name="item-undelete"
    ),
    path("<str:name>/items/<str:vm_name>/purge/", recycle_bin.item_purge, name="item-purge"),
    path(
        "<str:name>/items/<str:vm_name>/repair-extension/",
        items.item_repair_extension,
        name="item-repair-extension",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/restore/",
        recovery.rp_restore,
        name="rp-restore",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/drill/",
        recovery.rp_drill,
        name="rp-drill",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/",
        recovery.rp_files,
        name="rp-files",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/session/",
        recovery.rp_files_session,
        name="rp-files-session",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/session/end/",
        recovery.rp_files_session_end,
        name="rp-files-session-end",
    ),
    path(
        "<str:name>/items/<str:vm_name>/rps/<uuid:rp_id>/files/download/",
        recovery.rp_files_download,
        name="rp-files-download",
    ),
    path("<str:name>/protect/", protection.protect, name="vault-protect"),
    path("<str:name>/access/", access.access_page, name="vault-access"),
    path("<str:name>/access/members/add/", access.member_add, name="vault-member-add"),
    path(
        "<str:name>/access/members/<int:pk>/remove/",
        access.member_remove,
        name="vault-member-remove",
    ),
    path("<str:name>/access/guards/add/", access.guard_add, name="vault-guard-add"),
    path(
        "<str:name>/access/guards/<int:pk>/remove/",
        access.guard_remove,
        name="vault-guard-remove",
    ),
    path("<str:name>/access/hosts/link/", access.host_link, name="vault-host-link"),
    path(
        "<str:name>/access/hosts/<int:pk>/unlink/",
        access.host_unlink,
        name="vault-host-unlink",
    ),
    path("<str:name>/policies/", policy_views.policy_list, name="policy-list"),
    path("<str:name>/policies/new/", policy_views.policy_create, name="policy-create"),
    path("<str:name>/policies/simulate/", policy_views.policy_simulate, name="policy-simulate"),
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
