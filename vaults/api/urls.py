from django.urls import path

from vaults.api import lifecycle, recovery, targets, views

V = "vaults/<str:vault_name>"
ITEM = f"{V}/protected-items/<str:vm_name>"

urlpatterns = [
    path(
        "storage-targets/",
        targets.StorageTargetListView.as_view(),
        name="api-storage-target-list",
    ),
    path(
        "storage-targets/<str:name>/",
        targets.StorageTargetDetailView.as_view(),
        name="api-storage-target-detail",
    ),
    path(
        "storage-targets/<str:name>/test/",
        targets.StorageTargetTestView.as_view(),
        name="api-storage-target-test",
    ),
    path(
        "storage-targets/<str:name>/tests/<int:job_id>/",
        targets.StorageTargetTestResultView.as_view(),
        name="api-storage-target-test-result",
    ),
    path("vaults/", views.VaultListView.as_view(), name="api-vault-list"),
    path(f"{V}/", views.VaultDetailView.as_view(), name="api-vault-detail"),
    path(f"{V}/members/", views.MemberListView.as_view(), name="api-vault-member-list"),
    path(
        f"{V}/members/<int:member_id>/",
        views.MemberDetailView.as_view(),
        name="api-vault-member-detail",
    ),
    path(
        f"{V}/approvers/",
        views.GuardApproverListView.as_view(),
        name="api-vault-approver-list",
    ),
    path(
        f"{V}/approvers/<int:approver_id>/",
        views.GuardApproverDetailView.as_view(),
        name="api-vault-approver-detail",
    ),
    path(
        f"{V}/protected-items/",
        views.ProtectedItemListView.as_view(),
        name="api-protected-item-list",
    ),
    path(f"{ITEM}/", views.ProtectedItemDetailView.as_view(), name="api-protected-item-detail"),
    path(
        f"{ITEM}/recovery-points/",
        views.RecoveryPointListView.as_view(),
        name="api-recovery-point-list",
    ),
    path(
        f"{ITEM}/recovery-points/<uuid:rp_id>/",
        views.RecoveryPointDetailView.as_view(),
        name="api-recovery-point-detail",
    ),
]

RP = f"{ITEM}/recovery-points/<uuid:rp_id>"

urlpatterns += [
    path(f"{ITEM}/backup/", recovery.BackupNowView.as_view(), name="api-protected-item-backup"),
    path(f"{RP}/restore/", recovery.RestoreView.as_view(), name="api-recovery-point-restore"),
    path(f"{RP}/drill/", recovery.DrillView.as_view(), name="api-recovery-point-drill"),
    path(
        f"{RP}/file-recovery/",
        recovery.FileRecoverySessionListView.as_view(),
        name="api-file-recovery-session-list",
    ),
    path(
        f"{RP}/file-recovery/<uuid:session_id>/",
        recovery.FileRecoverySessionDetailView.as_view(),
        name="api-file-recovery-session-detail",
    ),
    path(f"{RP}/files/", recovery.FileListView.as_view(), name="api-recovery-point-files"),
    path(
        f"{RP}/files/download/",
        recovery.FileDownloadView.as_view(),
        name="api-recovery-point-file-download",
    ),
]

# Protection lifecycle and the recycle bin (vaults/api/lifecycle.py).
urlpatterns += [
    path(f"{ITEM}/stop/", lifecycle.StopProtectionView.as_view(), name="api-protected-item-stop"),
    path(
        f"{ITEM}/resume/",
        lifecycle.ResumeProtectionView.as_view(),
        name="api-protected-item-resume",
    ),
    path(f"{ITEM}/undelete/", lifecycle.UndeleteView.as_view(), name="api-protected-item-undelete"),
    path(f"{ITEM}/purge/", lifecycle.PurgeItemView.as_view(), name="api-protected-item-purge"),
    path(
        f"{V}/recycle-bin/", lifecycle.VaultRecycleBinView.as_view(), name="api-vault-recycle-bin"
    ),
    path("recycle-bin/", lifecycle.SiteRecycleBinView.as_view(), name="api-recycle-bin"),
]
