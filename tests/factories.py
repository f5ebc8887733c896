"""Plain factory functions: `make_vault(**overrides)`. No JSON fixtures."""

import itertools
import os
import time
from binascii import unhexlify
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from inventory.models import Disk, Host, VirtualMachine
from jobs.models import Job, Operation, Status
from policies.models import BackupPolicy
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Role, Vault, VaultMembership

_seq = itertools.count(1)


def make_user(username: str | None = None, *, superuser: bool = False, password="pw-secret-1"):
    User = get_user_model()
    username = username or f"user{next(_seq)}"
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.test", password)
    return User.objects.create_user(username, f"{username}@example.test", password)


def make_vault(name: str | None = None, *, owner=None, **fields) -> Vault:
    owner = owner or make_user(superuser=True)
    return Vault.create(name=name or f"vault{next(_seq)}", owner=owner, **fields)


def add_member(vault: Vault, user, role: str = Role.READER) -> VaultMembership:
    return VaultMembership.objects.create(vault=vault, user=user, role=role)


def make_host(root: Path, name: str | None = None, **fields) -> Host:
    root = Path(root)
    (root / "disks").mkdir(parents=True, exist_ok=True)
    (root / "snapshots").mkdir(parents=True, exist_ok=True)
    (root / "restores").mkdir(parents=True, exist_ok=True)
    fields.setdefault("snapshot_root", str(root / "snapshots"))
    fields.setdefault("allowed_roots", [str(root / "disks"), str(root / "restores")])
    return Host.objects.create(name=name or f"host{next(_seq)}", **fields)


def make_vm(host: Host, name: str | None = None, *, disks=((-1, 4 << 20),), **fields):
    """A VM with sparse raw disk files of the given (lun, size) inside the host's first root."""
    vm = VirtualMachine.objects.create(name=name or f"vm{next(_seq)}", host=host, **fields)
    root = Path(host.allowed_roots[0])
    for lun, size in disks:
        path = root / f"{vm.name}-lun{lun}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        Disk.objects.create(vm=vm, lun=lun, path=str(path), size=os.path.getsize(path))
    return vm


def make_policy(vault: Vault, name: str | None = None, **rep) -> BackupPolicy:
    base = {
        "name": name or f"policy{next(_seq)}",
        "kind": "standard",
        "timezone": "UTC",
        "consistency": "default",
        "schedule": {"frequency": "daily", "time": "02:00"},
        "instant_restore_days": 2,
        "retention": {"daily": {"days": 30}},
    }
    base.update(rep)
    policy = BackupPolicy(vault=vault)
    policy.apply_representation(base)
    policy.save()
    return policy


def make_protected_item(vault: Vault, vm, policy=None, **fields) -> ProtectedVM:
    policy = policy or vault.policies.get(name=BackupPolicy.DEFAULT_NAME)
    fields.setdefault("state", ItemState.PROTECTED)
    return ProtectedVM.objects.create(vault=vault, vm=vm, policy=policy, **fields)


def make_rp(item: ProtectedVM, **fields) -> RecoveryPoint:
    now = timezone.now()
    fields.setdefault("time", now)
    fields.setdefault("consistency", "crash")
    fields.setdefault("expires_at", now + timedelta(days=30))
    fields.setdefault("tags", ["daily"])
    fields.setdefault("disks", [{"lun": d.lun, "size": d.size} for d in item.vm.disks.all()])
    return RecoveryPoint.objects.create(vault=item.vault, protected_item=item, **fields)


def make_job(vault: Vault, item=None, **fields) -> Job:
    fields.setdefault("operation", Operation.BACKUP)
    fields.setdefault("status", Status.COMPLETED)
    return Job.objects.create(
        vault=vault, protected_item=item, vm_name=item.vm.name if item else "", **fields
    )


def make_totp(user, name: str = "phone"):
    """A confirmed authenticator app of `user` (enrolment itself is tested through its page)."""
    return TOTPDevice.objects.create(user=user, name=name, confirmed=True)


def totp_code(device_or_hex_key, steps: int = 0) -> str:
    """The code an authenticator app shows now (or `steps` time steps later), computed with
    django-otp's own TOTP as an app computes it from the secret."""
    key = getattr(device_or_hex_key, "key", device_or_hex_key)
    totp = TOTP(unhexlify(key))
    totp.time = time.time() + 30 * steps
    return f"{totp.token():06d}"
