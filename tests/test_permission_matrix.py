"""Every page URL and API endpoint × every persona, with the status code each must get.

The table is written by hand from DESIGN §2 (not derived from vaults/access.py), so a change
in the access rules shows up here as a failing row. `test_every_url_is_in_the_matrix` fails
when a named URL has no row.

Columns: admin, owner, contributor, operator, reader, approver (guard approver of the vault,
not a member), outsider (logged in, no role), anon (not logged in). Pages send anonymous users
to the login page (302); the API answers 401/403 to them.

The world the rows refer to is built once per module (per xdist worker) and each case runs in
a transaction rolled back after its request, so a row that changes data leaves the next case
the same world.
"""

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.test.client import ClientHandler
from django.urls import get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient, ForceAuthClientHandler

import engine
from identity.models import Directory, GroupMapping
from inventory.models import VirtualMachine
from jobs import backup_queue, runner
from jobs.models import Job
from portal.models import ApiToken
from security.keys import fingerprint
from security.models import Alert, Approval, CustomerKey, SecurityKey
from tests import factories as f
from vaults.models import (
    FileRecoverySession,
    GuardApprover,
    ProtectedVM,
    Role,
    StorageTarget,
    VaultMembership,
)

PAGE_ITEM_RPS = {"name": "prod", "vm_name": "web-01"}
PERSONAS = ("admin", "owner", "contributor", "operator", "reader", "approver", "outsider", "anon")

# URL names that are not ours to guard (Django admin has its own staff check).
EXEMPT_NAMESPACES = ("admin",)

# (url name, method, kwargs, body, expected codes in PERSONAS order)
# kwargs values in braces are filled from the scenario below.
MATRIX = [
    # -- pages ---------------------------------------------------------------------------------
    ("login", "GET", {}, None, "200 200 200 200 200 200 200 200"),
    ("logout", "POST", {}, None, "302 302 302 302 302 302 302 302"),
    ("dashboard", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    # Reports: every signed-in user; rows narrowed to the vaults each sees (tests/pages).
    ("report-list", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    ("report-detail", "GET", {"slug": "backup-items"}, None, "200 200 200 200 200 200 200 302"),
    ("report-detail", "GET", {"slug": "nothing"}, None, "404 404 404 404 404 404 404 302"),
    ("account-tokens", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    # -- health and metrics: the balancer's check is open, the rest is for site admins --------
    ("healthz", "GET", {}, None, "200 200 200 200 200 200 200 200"),
    # Prometheus presents a token or scrapes from an allowed address (tests/test_metrics.py).
    ("metrics", "GET", {}, None, "200 403 403 403 403 403 403 403"),
    ("site-health", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("api-health", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    ("account-tokens", "POST", {}, {"name": "ci"}, "200 200 200 200 200 200 200 302"),
    (
        "account-token-revoke",
        "POST",
        {"pk": "{owner_token}"},
        None,
        "404 302 404 404 404 404 404 302",
    ),
    ("vault-list", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    ("vault-create", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("vault-attach", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    (
        "vault-attach",
        "POST",
        {},
        {"name": "Recovered", "location": "{spare_dir}"},
        "200 403 403 403 403 403 403 302",
    ),
    (
        "vault-create",
        "POST",
        {},
        {
            "name": "Fresh",
            "soft_delete_state": "enabled",
            "soft_delete_days": 14,
            "immutability": "disabled",
        },
        "302 403 403 403 403 403 403 302",
    ),
    ("vault-detail", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    ("vault-settings", "GET", {"name": "prod"}, None, "200 200 200 403 403 404 404 302"),
    ("vault-delete", "POST", {"name": "empty"}, None, "302 302 403 403 403 404 404 302"),
    ("item-list", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    (
        "item-detail",
        "GET",
        {"name": "prod", "vm_name": "web-01"},
        None,
        "200 200 200 200 200 404 404 302",
    ),
    ("item-rps", "GET", PAGE_ITEM_RPS, None, "200 200 200 200 200 404 404 302"),
    ("vault-protect", "GET", {"name": "prod"}, None, "200 200 200 200 403 404 404 302"),
    ("vault-access", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    (
        "vault-member-add",
        "POST",
        {"name": "prod"},
        {"username": "outsider", "role": "reader"},
        "302 302 403 403 403 404 404 302",
    ),
    (
        "vault-member-remove",
        "POST",
        {"name": "prod", "pk": "{reader_membership}"},
        None,
        "302 302 403 403 403 404 404 302",
    ),
    (
        "vault-guard-add",
        "POST",
        {"name": "prod"},
        {"username": "outsider"},
        "302 403 403 403 403 404 404 302",
    ),
    (
        "vault-guard-remove",
        "POST",
        {"name": "prod", "pk": "{guard}"},
        None,
        "302 403 403 403 403 404 404 302",
    ),
    (
        "vault-host-link",
        "POST",
        {"name": "prod"},
        {"host": "{host3}"},
        "302 403 403 403 403 404 404 302",
    ),
    (
        "vault-host-unlink",
        "POST",
        {"name": "prod", "pk": "{host2_linked}"},
        None,
        "302 403 403 403 403 404 404 302",
    ),
    ("policy-list", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    ("policy-create", "GET", {"name": "prod"}, None, "200 200 200 403 403 404 404 302"),
    (
        "policy-simulate",
        "POST",
        {"name": "prod"},
        {"schedule_frequency": "daily", "schedule_time": "02:00", "daily_enabled": "on"},
        "200 200 200 200 200 404 404 302",
    ),
    (
        "policy-edit",
        "GET",
        {"name": "prod", "policy": "Spare"},
        None,
        "200 200 200 403 403 404 404 302",
    ),
    (
        "policy-delete",
        "POST",
        {"name": "prod", "policy": "Spare"},
        None,
        "302 302 302 403 403 404 404 302",
    ),
    ("job-list", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    (
        "job-detail",
        "GET",
        {"name": "prod", "job_id": "{job}"},
        None,
        "200 200 200 200 200 404 404 302",
    ),
    ("host-list", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("host-create", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("host-edit", "GET", {"name": "host1"}, None, "200 403 403 403 403 403 403 302"),
    ("host-detail", "GET", {"name": "host1"}, None, "200 403 403 403 403 403 403 302"),
    # host1 is an image host: the admin's answer is the page saying so.
    ("host-test-connection", "POST", {"name": "host1"}, None, "200 403 403 403 403 403 403 302"),
    ("host-discover", "POST", {"name": "host1"}, None, "200 403 403 403 403 403 403 302"),
    ("target-list", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("target-create", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("target-edit", "GET", {"name": "s3one"}, None, "200 403 403 403 403 403 403 302"),
    ("target-delete", "POST", {"name": "s3spare"}, None, "302 403 403 403 403 403 403 302"),
    # No location given and no vault in the target: the admin's answer is the page saying so.
    ("target-test", "POST", {"name": "s3one"}, None, "200 403 403 403 403 403 403 302"),
    (
        "target-test-result",
        "GET",
        {"name": "s3one", "job_id": "{target_test}"},
        None,
        "200 403 403 403 403 403 403 302",
    ),
    ("directory-list", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("directory-create", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    (
        "directory-create",
        "POST",
        {},
        {
            "name": "corp2",
            "kind": "oidc",
            "title": "Corp 2",
            "enabled": "on",
            "secret_source": "env",
            "issuer": "https://login.example.org",
            "client_id": "lifeboat",
            "scopes": "openid groups",
            "groups_claim": "groups",
            "username_claim": "preferred_username",
            "user_filter": "(uid=%(user)s)",
            "group_type": "group_of_names",
        },
        "302 403 403 403 403 403 403 302",
    ),
    ("directory-edit", "GET", {"name": "corp-sso"}, None, "200 403 403 403 403 403 403 302"),
    ("directory-delete", "POST", {"name": "spare-ldap"}, None, "302 403 403 403 403 403 403 302"),
    (
        "group-mapping-create",
        "POST",
        {},
        {"directory": "corp-sso", "group": "ops", "vault_pattern": "prod*", "role": "reader"},
        "302 403 403 403 403 403 403 302",
    ),
    (
        "group-mapping-delete",
        "POST",
        {"pk": "{mapping}"},
        None,
        "302 403 403 403 403 403 403 302",
    ),
    # The provider does not answer here: everybody is sent back to the login page, refused.
    ("oidc-login", "GET", {"name": "corp-sso"}, None, "302 302 302 302 302 302 302 302"),
    ("oidc-callback", "GET", {"name": "corp-sso"}, None, "302 302 302 302 302 302 302 302"),
    ("vm-list", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("vm-create", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    ("vm-detail", "GET", {"name": "web-01"}, None, "200 403 403 403 403 403 403 302"),
    ("vm-edit", "GET", {"name": "web-01"}, None, "200 403 403 403 403 403 403 302"),
    # -- API -----------------------------------------------------------------------------------
    ("api-schema", "GET", {}, None, "200 200 200 200 200 200 200 200"),
    ("api-docs", "GET", {}, None, "200 200 200 200 200 200 200 200"),
    ("api-redoc", "GET", {}, None, "200 200 200 200 200 200 200 200"),
    (
        "api-token-obtain",
        "POST",
        {},
        {"username": "{self}", "password": "pw-secret-1"},
        # The outsider has an authenticator app: a token also needs its code (`otp`).
        "201 201 201 201 201 201 400 401",
    ),
    ("api-token-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-token-detail",
        "DELETE",
        {"token_id": "{owner_token}"},
        None,
        "404 204 404 404 404 404 404 401",
    ),
    ("api-report-backup-items", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-report-usage", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-report-jobs", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-report-adherence", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-vault-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-vault-list", "POST", {}, {"name": "Fresh"}, "201 403 403 403 403 403 403 401"),
    ("api-vault-detail", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-vault-detail",
        "PATCH",
        {"vault_name": "prod"},
        {"soft_delete_days": 30},
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-vault-detail",
        "DELETE",
        {"vault_name": "empty"},
        None,
        "204 204 403 403 403 404 404 401",
    ),
    (
        "api-vault-member-list",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-vault-member-list",
        "POST",
        {"vault_name": "prod"},
        {"user": "outsider", "role": "reader"},
        "201 201 403 403 403 404 404 401",
    ),
    (
        "api-vault-member-detail",
        "DELETE",
        {"vault_name": "prod", "member_id": "{reader_membership}"},
        None,
        "204 204 403 403 403 404 404 401",
    ),
    (
        "api-vault-approver-list",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 403 403 403 403 404 404 401",
    ),
    (
        "api-vault-approver-list",
        "POST",
        {"vault_name": "prod"},
        {"user": "outsider"},
        "201 403 403 403 403 404 404 401",
    ),
    (
        "api-vault-approver-detail",
        "DELETE",
        {"vault_name": "prod", "approver_id": "{guard}"},
        None,
        "204 403 403 403 403 404 404 401",
    ),
    (
        "api-protected-item-list",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-protected-item-list",
        "POST",
        {"vault_name": "prod"},
        {"vm": "{vm2}", "policy": "DefaultPolicy"},
        "201 201 201 201 403 404 404 401",
    ),
    (
        "api-protected-item-detail",
        "GET",
        {"vault_name": "prod", "vm_name": "web-01"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-protected-item-detail",
        "PATCH",
        {"vault_name": "prod", "vm_name": "web-01"},
        {"policy": "Spare"},
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-recovery-point-list",
        "GET",
        {"vault_name": "prod", "vm_name": "web-01"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-recovery-point-detail",
        "GET",
        {"vault_name": "prod", "vm_name": "web-01", "rp_id": "{rp}"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    ("api-policy-list", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-policy-simulate",
        "POST",
        {"vault_name": "prod"},
        {"name": "Spare", "months": 1},
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-policy-list",
        "POST",
        {"vault_name": "prod"},
        {
            "name": "Nightly",
            "schedule": {"frequency": "daily", "time": "03:00"},
            "retention": {"daily": {"days": 7}},
        },
        "201 201 201 403 403 404 404 401",
    ),
    (
        "api-policy-detail",
        "GET",
        {"vault_name": "prod", "policy_name": "Spare"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-policy-detail",
        "PATCH",
        {"vault_name": "prod", "policy_name": "Spare"},
        {"instant_restore_days": 3},
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-policy-detail",
        "PUT",
        {"vault_name": "prod", "policy_name": "Spare"},
        {
            "name": "Spare",
            "schedule": {"frequency": "daily", "time": "04:00"},
            "retention": {"daily": {"days": 30}},
        },
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-policy-detail",
        "DELETE",
        {"vault_name": "prod", "policy_name": "Spare"},
        None,
        "204 204 204 403 403 404 404 401",
    ),
    ("api-host-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-host-list",
        "POST",
        {},
        {"name": "host9", "snapshot_root": "{spare_dir}", "allowed_roots": ["{spare_dir}"]},
        "201 403 403 403 403 403 403 401",
    ),
    ("api-host-detail", "GET", {"host_id": "{host}"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-host-detail",
        "PATCH",
        {"host_id": "{host}"},
        {"snapshot_root": "{spare_dir}"},
        "200 403 403 403 403 404 404 401",
    ),
    ("api-host-detail", "DELETE", {"host_id": "{host2}"}, None, "204 403 403 403 403 404 404 401"),
    # host1 is an image host: the admin gets the 400 naming the connector.
    (
        "api-host-test-connection",
        "POST",
        {"name": "host1"},
        None,
        "400 403 403 403 403 403 403 401",
    ),
    ("api-host-discover", "POST", {"name": "host1"}, None, "400 403 403 403 403 403 403 401"),
    ("api-storage-target-list", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    (
        "api-storage-target-list",
        "POST",
        {},
        {
            "name": "s3new",
            "kind": "s3",
            "credentials_env": {"access_key_id": "K_ID", "secret_access_key": "K_SECRET"},
        },
        "201 403 403 403 403 403 403 401",
    ),
    (
        "api-storage-target-detail",
        "GET",
        {"name": "s3one"},
        None,
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-storage-target-detail",
        "PATCH",
        {"name": "s3one"},
        {"region": "eu-west-1"},
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-storage-target-detail",
        "DELETE",
        {"name": "s3spare"},
        None,
        "204 403 403 403 403 403 403 401",
    ),
    # The admin's Test is queued for a worker; its answer is read where the 202 says.
    (
        "api-storage-target-test",
        "POST",
        {"name": "s3one"},
        {"location": "s3://bucket-one/x"},
        "202 403 403 403 403 403 403 401",
    ),
    (
        "api-storage-target-test-result",
        "GET",
        {"name": "s3one", "job_id": "{target_test}"},
        None,
        "200 403 403 403 403 403 403 401",
    ),
    ("api-directory-list", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    (
        "api-directory-list",
        "POST",
        {},
        {
            "name": "corp3",
            "kind": "ldap",
            "title": "Corp 3",
            "server_uri": "ldaps://ldap.example.org",
            "user_base": "ou=people,dc=example,dc=org",
        },
        "201 403 403 403 403 403 403 401",
    ),
    (
        "api-directory-detail",
        "GET",
        {"name": "corp-sso"},
        None,
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-directory-detail",
        "PATCH",
        {"name": "corp-sso"},
        {"title": "Corp single sign-on"},
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-directory-detail",
        "DELETE",
        {"name": "spare-ldap"},
        None,
        "204 403 403 403 403 403 403 401",
    ),
    ("api-group-mapping-list", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    (
        "api-group-mapping-list",
        "POST",
        {},
        {"directory": "corp-sso", "group": "ops", "site_admin": True},
        "201 403 403 403 403 403 403 401",
    ),
    (
        "api-group-mapping-detail",
        "GET",
        {"mapping_id": "{mapping}"},
        None,
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-group-mapping-detail",
        "DELETE",
        {"mapping_id": "{mapping}"},
        None,
        "204 403 403 403 403 403 403 401",
    ),
    ("api-vm-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    ("api-vm-detail", "GET", {"vm_id": "{vm}"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-vm-detail",
        "PATCH",
        {"vm_id": "{vm2}"},
        {"os_type": "windows"},
        "200 403 403 403 403 404 404 401",
    ),
    ("api-vm-detail", "DELETE", {"vm_id": "{vm2}"}, None, "204 403 403 403 403 404 404 401"),
    ("api-job-list", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-job-detail",
        "GET",
        {"vault_name": "prod", "job_id": "{job}"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
]

ITEM = {"vault_name": "prod", "vm_name": "web-01"}
RP = {**ITEM, "rp_id": "{real_rp}"}
PAGE_ITEM = {"name": "prod", "vm_name": "web-01"}
PAGE_RP = {**PAGE_ITEM, "rp_id": "{real_rp}"}

MATRIX += [
    # -- backups, restores, file recovery (pages) ------------------------------------------------
    ("item-backup-now", "POST", PAGE_ITEM, {}, "302 302 302 302 403 404 404 302"),
    ("item-repair-extension", "POST", PAGE_ITEM, None, "302 302 302 302 403 404 404 302"),
    (
        "job-cancel",
        "POST",
        {"name": "prod", "job_id": "{queued_job}"},
        None,
        "302 302 302 302 403 404 404 302",
    ),
    ("rp-restore", "GET", PAGE_RP, None, "200 200 200 200 403 404 404 302"),
    ("rp-drill", "POST", PAGE_RP, None, "302 302 302 302 403 404 404 302"),
    ("rp-files", "GET", PAGE_RP, None, "200 200 200 200 403 404 404 302"),
    ("rp-files-session", "POST", PAGE_RP, None, "302 302 302 302 403 404 404 302"),
    ("rp-files-session-end", "POST", PAGE_RP, None, "302 302 302 302 403 404 404 302"),
    (
        "rp-files-download",
        "GET",
        PAGE_RP,
        {"disk": -1, "path": "/hello.txt"},
        "200 200 200 200 403 404 404 302",
    ),
    # -- backups, restores, file recovery (API) --------------------------------------------------
    ("api-protected-item-backup", "POST", ITEM, {}, "202 202 202 202 403 404 404 401"),
    (
        "api-job-cancel",
        "POST",
        {"vault_name": "prod", "job_id": "{queued_job}"},
        None,
        "202 202 202 202 403 404 404 401",
    ),
    (
        "api-recovery-point-restore",
        "POST",
        RP,
        {"kind": "restore_disks", "target": {"host": "{host}", "path": "{restore_dir}"}},
        "202 202 202 202 403 404 404 401",
    ),
    ("api-recovery-point-drill", "POST", RP, {}, "202 202 202 202 403 404 404 401"),
    ("api-file-recovery-session-list", "GET", RP, None, "200 200 200 200 403 404 404 401"),
    ("api-file-recovery-session-list", "POST", RP, None, "201 201 201 201 403 404 404 401"),
    (
        "api-file-recovery-session-detail",
        "DELETE",
        {**RP, "session_id": "{session}"},
        None,
        "204 204 204 204 403 404 404 401",
    ),
    (
        "api-recovery-point-files",
        "GET",
        RP,
        {"disk": -1, "path": "/"},
        "200 200 200 200 403 404 404 401",
    ),
    (
        "api-recovery-point-file-download",
        "GET",
        RP,
        {"disk": -1, "path": "/hello.txt"},
        "200 200 200 200 403 404 404 401",
    ),
    ("api-vm-repair-extension", "POST", {"vm_id": "{vm}"}, None, "200 200 200 200 403 404 404 401"),
    # -- protection lifecycle ----------------------------------------------------------------------
    (
        "api-protected-item-stop",
        "POST",
        ITEM,
        {"mode": "retain_forever"},
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-protected-item-resume",
        "POST",
        {"vault_name": "prod", "vm_name": "old-01"},
        {},
        "200 200 200 403 403 404 404 401",
    ),
    (
        "api-protected-item-undelete",
        "POST",
        {"vault_name": "prod", "vm_name": "gone-01"},
        None,
        "200 200 200 403 403 404 404 401",
    ),
    # Purge now needs soft delete disabled; in this vault it is enabled, so the rule answers 409.
    (
        "api-protected-item-purge",
        "POST",
        {"vault_name": "prod", "vm_name": "gone-01"},
        None,
        "409 409 409 403 403 404 404 401",
    ),
    (
        "api-vault-recycle-bin",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    ("api-recycle-bin", "GET", {}, None, "200 403 403 403 403 403 403 401"),
]

MATRIX += [
    # -- MUA approvals, alerts, audit, customer-managed keys -------------------------------------
    # The approval was requested by the owner: the owner may not decide it, the approver may.
    ("api-approval-list", "GET", {"vault_name": "prod"}, None, "200 200 200 403 403 200 404 401"),
    (
        "api-approval-detail",
        "GET",
        {"vault_name": "prod", "approval_id": "{approval}"},
        None,
        "200 200 200 403 403 200 404 401",
    ),
    # The request is the owner's: the owner may not decide it, the approver may.
    (
        "api-approval-approve",
        "POST",
        {"vault_name": "prod", "approval_id": "{approval}"},
        {},
        "403 403 403 403 403 200 404 401",
    ),
    (
        "api-approval-reject",
        "POST",
        {"vault_name": "prod", "approval_id": "{approval}"},
        {},
        "403 403 403 403 403 200 404 401",
    ),
    ("api-alert-list", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-alert-detail",
        "GET",
        {"vault_name": "prod", "alert_id": "{alert}"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-alert-acknowledge",
        "POST",
        {"vault_name": "prod", "alert_id": "{alert}"},
        {},
        "200 200 200 200 403 404 404 401",
    ),
    (
        "api-alert-resolve",
        "POST",
        {"vault_name": "prod", "alert_id": "{alert}"},
        {},
        "200 200 200 403 403 404 404 401",
    ),
    ("api-alert-settings", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-alert-settings",
        "PATCH",
        {"vault_name": "prod"},
        {"job_alerts": False},
        "200 200 200 403 403 404 404 401",
    ),
    ("api-alert-count", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-vault-audit-list",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 403 403 403 404 404 401",
    ),
    (
        "api-vault-audit-export",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 403 403 403 404 404 401",
    ),
    ("api-audit-list", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    ("api-audit-export", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    ("api-key-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-key-list",
        "POST",
        {},
        {"name": "k9", "path": "{key_file}"},
        "201 403 403 403 403 403 403 401",
    ),
    ("api-key-detail", "GET", {"key_name": "k1"}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-key-detail",
        "PATCH",
        {"key_name": "k1"},
        {"enabled": False},
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-key-rotate",
        "POST",
        {"key_name": "k1"},
        {"path": "{key_file}"},
        "202 403 403 403 403 403 403 401",
    ),
]

PAGE_APPROVAL = {"name": "prod", "approval_id": "{approval}"}
PAGE_ALERT = {"name": "prod", "alert_id": "{alert}"}

MATRIX += [
    # -- protection lifecycle and the recycle bin (pages) ----------------------------------------
    ("item-stop", "POST", PAGE_ITEM, {"mode": "retain_forever"}, "302 302 302 403 403 404 404 302"),
    (
        "item-resume",
        "POST",
        {"name": "prod", "vm_name": "old-01"},
        {},
        "302 302 302 403 403 404 404 302",
    ),
    (
        "item-change-policy",
        "POST",
        PAGE_ITEM,
        {"policy": "Spare"},
        "302 302 302 403 403 404 404 302",
    ),
    (
        "item-undelete",
        "POST",
        {"name": "prod", "vm_name": "gone-01"},
        None,
        "302 302 302 403 403 404 404 302",
    ),
    # Soft delete is enabled in prod, so the rule refuses; the page says so and goes back.
    (
        "item-purge",
        "POST",
        {"name": "prod", "vm_name": "gone-01"},
        None,
        "302 302 302 403 403 404 404 302",
    ),
    ("vault-recycle-bin", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    ("site-recycle-bin", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    # -- settings: encryption -----------------------------------------------------------------------
    ("vault-encryption", "GET", {"name": "prod"}, None, "200 200 200 403 403 404 404 302"),
    (
        "vault-encryption",
        "POST",
        {"name": "prod"},
        {"encryption": "platform"},
        "302 302 302 403 403 404 404 302",
    ),
    # -- MUA approvals (pages): the request is the owner's, so only the approver decides it -------
    ("approval-list", "GET", {"name": "prod"}, None, "200 200 200 403 403 200 404 302"),
    ("approval-detail", "GET", PAGE_APPROVAL, None, "200 200 200 403 403 200 404 302"),
    ("approval-approve", "POST", PAGE_APPROVAL, {}, "403 403 403 403 403 302 404 302"),
    ("approval-reject", "POST", PAGE_APPROVAL, {}, "403 403 403 403 403 302 404 302"),
    ("my-approvals", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    # -- alerts (pages) ---------------------------------------------------------------------------
    ("site-alerts", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    ("alert-list", "GET", {"name": "prod"}, None, "200 200 200 200 200 404 404 302"),
    (
        "alert-settings",
        "POST",
        {"name": "prod"},
        {"job_alerts": "false"},
        "302 302 302 403 403 404 404 302",
    ),
    ("alert-acknowledge", "POST", PAGE_ALERT, None, "302 302 302 302 403 404 404 302"),
    ("alert-resolve", "POST", PAGE_ALERT, None, "302 302 302 403 403 404 404 302"),
    # -- audit log (pages) --------------------------------------------------------------------------
    ("vault-audit", "GET", {"name": "prod"}, None, "200 200 403 403 403 404 404 302"),
    ("site-audit", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    # -- customer-managed keys (pages): site admins only ----------------------------------------------
    ("key-list", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    # -- second factor -------------------------------------------------------------------------
    # No password step came first: the code step sends everybody back to the login.
    ("login-code", "GET", {}, None, "302 302 302 302 302 302 302 302"),
    ("login-code", "POST", {}, {"code": "123456"}, "302 302 302 302 302 302 302 302"),
    ("account-second-factor", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    ("account-second-factor-app", "GET", {}, None, "200 200 200 200 200 200 200 302"),
    (
        "account-second-factor-app",
        "POST",
        {},
        {"code": "12"},
        "400 400 400 400 400 400 400 302",
    ),
    # New codes need an app and a current code from it: without, back to the page, saying so.
    ("account-recovery-codes", "POST", {}, None, "302 302 302 302 302 302 302 302"),
    (
        "account-second-factor-remove",
        "POST",
        {"pk": "{outsider_app}"},
        None,
        "404 404 404 404 404 404 302 302",
    ),
    # Security keys: JSON doors of the browser's ceremonies (no ceremony under way here).
    ("login-key-options", "POST", {}, None, "400 400 400 400 400 400 400 400"),
    ("login-key", "POST", {}, None, "400 400 400 400 400 400 400 400"),
    # Only a user with an app may add a key.
    ("account-security-key-options", "POST", {}, None, "400 400 400 400 400 400 200 302"),
    ("account-security-key-add", "POST", {}, None, "400 400 400 400 400 400 400 302"),
    (
        "account-security-key-remove",
        "POST",
        {"pk": "{outsider_key}"},
        None,
        "404 404 404 404 404 404 302 302",
    ),
    ("second-factor-site", "GET", {}, None, "200 403 403 403 403 403 403 302"),
    (
        "second-factor-site",
        "POST",
        {},
        {"second_factor_required": "site_admins"},
        "302 403 403 403 403 403 403 302",
    ),
    (
        "second-factor-reset",
        "POST",
        {"username": "outsider"},
        None,
        "302 403 403 403 403 403 403 302",
    ),
    ("api-second-factor-setting", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    (
        "api-second-factor-setting",
        "PUT",
        {},
        {"second_factor_required": "everyone"},
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-second-factor-reset",
        "POST",
        {"username": "outsider"},
        None,
        "200 403 403 403 403 403 403 401",
    ),
    (
        "key-list",
        "POST",
        {},
        {"name": "k9", "path": "{key_file}"},
        "302 403 403 403 403 403 403 302",
    ),
    (
        "key-enabled",
        "POST",
        {"key_name": "k1"},
        {"enabled": "false"},
        "302 403 403 403 403 403 403 302",
    ),
    (
        "key-rotate",
        "POST",
        {"key_name": "k1"},
        {"path": "{key_file}"},
        "302 403 403 403 403 403 403 302",
    ),
]

# POST to a VM is site-admin work; creating one needs a real disk file, made in the scenario.
MATRIX.append(
    (
        "api-vm-list",
        "POST",
        {},
        {"name": "vm9", "host": "{host}", "disks": [{"lun": -1, "path": "{spare_disk}"}]},
        "201 403 403 403 403 403 403 401",
    )
)


FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class World:
    """Everything the rows refer to, built once per module and committed.

    Each case runs inside pytest-django's transaction, rolled back after it, so a row that
    changes data hands the next case the same world. Files on disk are not rolled back: a
    case fails if its request changed any (such a row would need a world of its own).
    """

    def __init__(self, root: Path):
        self.root = root
        self.lifeboat = {
            **django_settings.LIFEBOAT,
            "VAULT_STORE_ROOT": root / "vault-stores",
            "MASTER_KEY_FILE": root / "master.key",
            "DEMO_ROOT": root / "demo",
        }
        root.mkdir(parents=True, exist_ok=True)
        # Installed as `manage.py bootstrap` installs it: nothing creates the key on demand.
        engine.create_platform_kek(self.lifeboat["MASTER_KEY_FILE"])
        self.names: dict = {}
        self.sessions: dict[str, str] = {}  # persona → the key of its logged-in session
        self.files_when_built: dict = {}

    def files(self) -> dict[str, tuple[int, int] | None]:
        """Every path under the world's root; a file with its size and modification time.

        A directory counts by its presence only: a read takes a lease file in the store and
        drops it again, which leaves nothing behind but the directory's modification time.
        """
        found: dict[str, tuple[int, int] | None] = {}
        for folder, dirs, names in os.walk(self.root):
            for name in dirs:
                found[os.path.join(folder, name)] = None
            for name in names:
                st = os.lstat(os.path.join(folder, name))
                found[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
        return found


def _personas() -> dict:
    return {
        "admin": f.make_user("admin", superuser=True),
        **{name: f.make_user(name) for name in PERSONAS[1:-1]},
    }


def _scenario(root: Path, personas: dict) -> dict:
    """Vault `prod` with a member of every role, a guard approver and a protected VM with a
    recovery point and a job (as the shared fixtures make it), plus what the rows name."""
    admin = personas["admin"]
    host = f.make_host(root / "host1", name="host1")
    vault = f.make_vault("prod", owner=admin)
    for role in (Role.OWNER, Role.CONTRIBUTOR, Role.OPERATOR, Role.READER):
        f.add_member(vault, personas[role], role)
    GuardApprover.objects.create(vault=vault, user=personas["approver"], assigned_by=admin)
    vault.linked_hosts.add(host)
    vm = f.make_vm(host, name="web-01", disks=((-1, 4 << 20), (0, 2 << 20)))
    item = f.make_protected_item(vault, vm)
    rp = f.make_rp(item)
    job = f.make_job(vault, item)
    host3 = f.make_host(root / "host3", name="host3")
    stopped = f.make_protected_item(
        vault,
        f.make_vm(host, name="old-01"),
        state="protection_stopped",
        retention_mode="retain_forever",
    )
    gone = f.make_protected_item(vault, f.make_vm(host, name="gone-01"), state="soft_deleted")
    gone.deleted_at = timezone.now()
    gone.purge_at = timezone.now() + timedelta(days=14)
    gone.save()
    f.make_rp(stopped)
    f.make_rp(gone, soft_deleted_at=timezone.now(), purge_at=timezone.now() + timedelta(days=14))
    queued = f.make_job(vault, item, status="queued", operation="restore")
    spare = f.make_policy(vault, "Spare")
    empty = f.make_vault("empty", owner=admin)
    f.add_member(empty, personas["owner"], Role.OWNER)
    f.add_member(empty, personas["contributor"], Role.CONTRIBUTOR)
    f.add_member(empty, personas["operator"], Role.OPERATOR)
    f.add_member(empty, personas["reader"], Role.READER)
    host2 = f.make_host(root / "host2", name="host2")
    vault.linked_hosts.add(host2)
    vm2 = f.make_vm(host, name="db-01")
    spare_disk = root / "host1" / "disks" / "spare.img"
    spare_disk.write_bytes(b"\0" * 4096)
    token, _ = ApiToken.issue(personas["owner"], "matrix")
    outsider_app = f.make_totp(personas["outsider"])
    outsider_key = SecurityKey.objects.create(
        user=personas["outsider"], name="key", credential_id="matrix-key", public_key=b"k"
    )
    approval = Approval.objects.create(
        vault=vault,
        operation="vault.update",
        summary="vault.update: disable soft delete",
        reasons=["disable soft delete"],
        params={"soft_delete_days": 31},
        requested_by=personas["owner"],
        requested_by_name="owner",
        expires_at=timezone.now() + timedelta(hours=24),
    )
    k1, k9 = root / "k1.key", root / "k9.key"
    k1.write_bytes(b"\x01" * 32)
    k9.write_bytes(b"\x02" * 32)
    CustomerKey.objects.create(name="k1", path=str(k1), fingerprint=fingerprint(k1.read_bytes()))
    spare_dir = root / "spare"
    spare_dir.mkdir()
    for name in ("s3one", "s3spare"):
        StorageTarget.objects.create(
            name=name,
            kind="s3",
            credentials_env={"access_key_id": "MATRIX_NO_ID", "secret_access_key": "MATRIX_NO_KEY"},
        )
    target_test = f.make_job(
        None,
        operation="test_target",
        status="failed",
        params={"target": StorageTarget.objects.get(name="s3one").pk, "location": "s3://b/x"},
        error_message="environment variable(s) MATRIX_NO_ID not set",
    )
    sso = Directory.objects.create(
        name="corp-sso",
        kind="oidc",
        title="Corp SSO",
        issuer="http://127.0.0.1:9",
        client_id="lifeboat",
    )
    Directory.objects.create(
        name="spare-ldap",
        kind="ldap",
        title="Spare",
        server_uri="ldap://127.0.0.1:9",
        user_base="dc=example,dc=org",
    )
    mapping = GroupMapping.objects.create(
        directory=sso, group="backup-operators", vault_pattern="prod", role=Role.OPERATOR
    )
    return {
        "mapping": mapping.pk,
        "approval": approval.pk,
        "key_file": str(k9),
        "host3": host3.pk,
        "queued_job": queued.pk,
        "target_test": target_test.pk,
        "spare_dir": str(spare_dir),
        "restore_dir": host.allowed_roots[1],
        "owner_token": token.pk,
        "outsider_app": outsider_app.pk,
        "outsider_key": outsider_key.pk,
        "reader_membership": VaultMembership.objects.get(vault=vault, user=personas["reader"]).pk,
        "guard": GuardApprover.objects.get(vault=vault).pk,
        "host": host.pk,
        "host2": host2.pk,
        "host2_linked": host2.pk,
        "vm": vm.pk,
        "vm2": vm2.pk,
        "rp": rp.pk,
        "job": job.pk,
        "spare": spare.pk,
        "empty": empty.pk,
        "spare_disk": str(spare_disk),
    }


def _real_rp(personas: dict) -> dict:
    """A real recovery point of web-01 (an ext4 OS disk holding /hello.txt), with an open
    file-recovery session for every persona (the session alone grants nothing). Empty when
    mkfs.ext4 is missing: the rows that need it then skip."""
    mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
    if not os.path.exists(mkfs):
        return {}
    item = ProtectedVM.objects.get(vault__name="prod", vm__name="web-01")
    disk = item.vm.disks.get(lun=-1)
    staging = os.path.join(os.path.dirname(disk.path), "stage")
    os.makedirs(staging)
    with open(os.path.join(staging, "hello.txt"), "w") as out:
        out.write("hello\n")
    subprocess.run([mkfs, "-q", "-F", "-d", staging, disk.path], check=True)
    # Stopped, the VM is read as it is on any file system: one outcome, no live-read warning.
    VirtualMachine.objects.filter(pk=item.vm_id).update(power_state="stopped")
    with pytest.MonkeyPatch.context() as mp:
        # The backup runs in this process: no heartbeat thread beside the test's connection.
        mp.setattr(runner, "HEARTBEAT_SECONDS", 3600)
        job = backup_queue.backup_now(item, by=personas["admin"])
        assert runner.run_job(job.pk) == "completed"
    rp = Job.objects.get(pk=job.pk).recovery_point
    sessions = {
        name: FileRecoverySession.objects.create(
            vault=item.vault,
            recovery_point=rp,
            user=user,
            expires_at=timezone.now() + timedelta(hours=1),
        ).pk
        for name, user in personas.items()
    }
    return {"real_rp": rp.pk, "session": sessions}


def _sessions(personas: dict) -> dict[str, str]:
    """A logged-in session of every persona (a case sends its cookie: no login per case)."""
    sessions = {}
    for name, user in personas.items():
        client = Client()
        client.force_login(user)
        sessions[name] = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return sessions


def _job_alert() -> dict:
    """A failed backup of web-01 and the Sev-1 alert it raises. Made after the real backup,
    whose success would resolve it."""
    item = ProtectedVM.objects.get(vault__name="prod", vm__name="web-01")
    failed = f.make_job(item.vault, item, status="in_progress")
    runner.finish(failed, "failed", code="x", message="boom")
    return {"alert": Alert.objects.get(vault=item.vault).pk}


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """The world, committed once for this module's cases and flushed after them."""
    world = World(tmp_path_factory.mktemp("matrix-world"))
    try:
        with django_db_blocker.unblock():
            with override_settings(LIFEBOAT=world.lifeboat, PASSWORD_HASHERS=FAST_HASHER):
                personas = _personas()
                world.names = _scenario(world.root, personas)
                world.names.update(_real_rp(personas))
                world.names.update(_job_alert())
                world.sessions = _sessions(personas)
        world.files_when_built = world.files()
        yield world
    finally:
        with django_db_blocker.unblock():
            call_command("flush", verbosity=0, interactive=False)


@pytest.fixture(scope="module")
def handlers():
    """The request handlers of this module's clients, page and API. A handler loads the
    middleware on its first request, and WhiteNoise then indexes every static file: a fresh
    client per case spent more time there than on its request."""
    # As the test clients make them: CSRF is not enforced.
    return {"page": ClientHandler(False), "api": ForceAuthClientHandler(False)}


@pytest.fixture
def _isolated_data_dir():
    """Replaces the root conftest's data directories of each test: every case here uses the
    world's (see `names`), so it needs no directory of its own."""


@pytest.fixture
def names(world, db, settings):
    """The world's names for one case, run in a transaction that is rolled back after it."""
    settings.LIFEBOAT = world.lifeboat
    settings.PASSWORD_HASHERS = FAST_HASHER
    return world.names


def _fill(value, names: dict, persona: str):
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        key = value[1:-1]
        if key == "self":
            return persona
        found = names[key]
        if isinstance(found, dict):  # per persona; anonymous callers borrow the admin's
            return found.get(persona, found["admin"])
        return found
    if isinstance(value, dict):
        return {k: _fill(v, names, persona) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names, persona) for v in value]
    return value


def _request(client, method, url, body, api):
    if api:
        return getattr(client, method.lower())(url, body, format="json")
    return getattr(client, method.lower())(url, body or {})


def _row_id(row):
    return f"{row[0]}-{row[1]}"


@pytest.mark.parametrize("row", [pytest.param(r, id=_row_id(r)) for r in MATRIX])
@pytest.mark.parametrize("persona", PERSONAS)
def test_matrix(row, persona, world, names, handlers):
    name, method, kwargs, body, expected = row
    codes = dict(zip(PERSONAS, expected.split(), strict=True))
    api = name.startswith("api-")
    if "{real_rp}" in repr(row) and "real_rp" not in names:
        pytest.skip("mkfs.ext4 is needed for a real recovery point")
    url = reverse(name, kwargs=_fill(kwargs, names, persona))
    client = APIClient() if api else Client()
    client.handler = handlers["api" if api else "page"]
    if persona != "anon":
        client.cookies[django_settings.SESSION_COOKIE_NAME] = world.sessions[persona]
    response = _request(client, method, url, _fill(body, names, persona), api)
    # As a WSGI server does when the client goes: a streamed download's generator is closed,
    # which releases what it holds open (the store's lease).
    response.close()
    assert response.status_code == int(codes[persona]), (
        f"{persona} {method} {url}: {response.status_code}, expected {codes[persona]}: "
        f"{response.content[:300]!r}"
    )
    changed = {
        path
        for path in world.files().items() ^ world.files_when_built.items()
        for path in [path[0]]
    }
    assert not changed, (
        f"{persona} {method} {url} changed files on disk, which the rollback cannot undo: "
        f"{sorted(changed)}"
    )


def _named_urls(resolver=None, namespace=""):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if hasattr(pattern, "url_patterns"):
            ns = pattern.namespace or ""
            if ns in EXEMPT_NAMESPACES:
                continue
            yield from _named_urls(pattern, f"{namespace}{ns}:" if ns else namespace)
        else:
            yield f"{namespace}{pattern.name}" if pattern.name else str(pattern.pattern)


def test_every_url_is_in_the_matrix():
    covered = {row[0] for row in MATRIX}
    missing = sorted(set(_named_urls()) - covered)
    assert not missing, f"URLs without a row in the permission matrix: {missing}"


def test_matrix_rows_are_well_formed():
    for row in MATRIX:
        assert len(row[4].split()) == len(PERSONAS), row
