"""Restores: restore disks, create a new VM, replace existing disks.

Everything that can be wrong with a request is found before the job is created, so bad input
never writes a byte. The engine writes each disk to a hidden temp file beside its target
(`.<name>.lifeboat-restore-<id>`) and renames it into place only when every chunk was verified
and written: an interrupted restore leaves that clearly marked temp file, never a partial disk
under the final name.

What the request checked is checked again where the bytes are written: the request stores
the target directory with its symlinks resolved, and the job opens it by walking down from the
allowed root without following any symlink, creates the disks relative to that open directory
and never overwrites a name taken since (replace disks: only the very file it opened). A target
that changed fails the job with `target_changed` before anything is put in place. A new VM's
name is held by its job from the request on, so a second restore cannot write disks for it.
"""

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

import engine
from engine.connectors import NbdReader, connector_for
from inventory.models import Connector, Disk, Host, PowerState, VirtualMachine, name_validator
from jobs import hypervisor, runner
from jobs.backup import EngineProgress, engine_error, mib, vm_spec
from jobs.models import (
    Job,
    Operation,
    Param,
    RestoreKind,
    RestoreTier,
    Status,
    vm_name_holder,
)
from jobs.reconcile import record_recovery_point, restore_marker
from jobs.runner import JobCancelled, JobContext, JobError, create_job
from security.kek import kek_for
from vaults import access, audit
from vaults.models import ProtectedVM, RecoveryPoint, Replication, RPConsistency
from vaults.stores import (
    TargetUnusable,
    open_or_create_snapshot_store,
    preferred_tier,
    rp_store,
    store_retain_until,
)

SAFETY_DAYS = 30
RAW, QCOW2 = "raw", "qcow2"
# A restore job's sub-tasks (replace disks takes a safety recovery point first).
TAKE_SAFETY_RP = "Take safety recovery point"
RESTORE_DATA = "Restore data"


def _disk_file_name(vm_name: str, lun: int, rp: RecoveryPoint, fmt: str = RAW) -> str:
    disk = "os" if lun == Disk.OS_LUN else f"lun{lun}"
    return f"{vm_name}-{disk}-{rp.time:%Y%m%d-%H%M%S}.{'qcow2' if fmt == QCOW2 else 'img'}"


def _checked_format(host: Host, target: dict[str, Any]) -> str:
    """The restored files' format: qcow2 by default on a libvirt host (what its changed-block
    tracking needs), raw on an image host (the only format it reads)."""
    libvirt = host.connector == Connector.LIBVIRT
    fmt = target.get("format") or (QCOW2 if libvirt else RAW)
    if fmt not in (RAW, QCOW2):
        raise ValidationError({"target.format": "Choose qcow2 or raw."})
    if fmt == QCOW2 and not libvirt:
        raise ValidationError(
            {"target.format": f"Host {host.name} reads raw image files only; choose raw."}
        )
    return str(fmt)


def _checked_start(host: Host, kind: str, target: dict[str, Any]) -> bool:
    start = target.get("start", False)
    if not isinstance(start, bool):
        raise ValidationError({"target.start": "Give true or false."})
    if start and (kind != RestoreKind.CREATE_VM or host.connector != Connector.LIBVIRT):
        raise ValidationError(
            {"target.start": "Only a new VM on a libvirt host can be started by the restore."}
        )
    return start


def _check_domain_definition(rp: RecoveryPoint, luns: list[int]) -> None:
    """A new libvirt domain is made from the recovery point's saved domain XML, its disks
    matched by target: a recovery point without them cannot make one."""
    if not (rp.hypervisor or {}).get("domain_xml"):
        raise ValidationError(
            {
                "target.host": "This recovery point holds no libvirt domain definition (it was "
                "not taken from a libvirt domain); restore its disks instead."
            }
        )
    targets = {d["lun"]: d.get("target") for d in rp.disks}
    missing = [lun for lun in luns if not targets.get(lun)]
    if missing:
        raise ValidationError({"luns": f"LUN(s) {missing} have no disk target in the domain."})


# -- the request -----------------------------------------------------------------------------------

# Where a restore reads: the vault's own stores, or the secondary copy (which must answer
# while the primary does not: nothing else of the vault is opened then).
PRIMARY, SECONDARY = "primary", "secondary"
SOURCES = (PRIMARY, SECONDARY)
PRIMARY_TIERS = (RestoreTier.AUTO, RestoreTier.SNAPSHOT, RestoreTier.VAULT)


def request_restore(
    rp: RecoveryPoint,
    *,
    by: User,
    request: HttpRequest | None = None,
    kind: str | None = None,
    luns: list[int] | None = None,
    tier: str = RestoreTier.AUTO,
    target: dict[str, Any] | None = None,
    source: str = PRIMARY,
) -> Job:
    """Validate a restore request completely, then queue its job.

    1. The user may restore in the vault; the recovery point may be restored (not in the
       recycle bin, not expired unless it is the item's latest).
    2. The kind, the tier (or the secondary copy: `source="secondary"`, for replicated RPs)
       and the disks are ones this recovery point offers.
    3. The target: a directory the files can be written to, or the stopped VM's own disks.
    4. The tier's store holds the recovery point and the vault's key opens it.
    5. The job is queued with everything the checks resolved, and audited."""
    access.require(by, rp.vault, "restore")
    _check_restorable(rp)
    if kind not in RestoreKind.values:
        raise ValidationError({"kind": f"Choose one of: {', '.join(RestoreKind.values)}."})
    if tier not in PRIMARY_TIERS:
        raise ValidationError({"tier": f"Choose one of: {', '.join(PRIMARY_TIERS)}."})
    if source not in SOURCES:
        raise ValidationError({"source": f"Choose one of: {', '.join(SOURCES)}."})
    luns = _checked_luns(rp, kind, luns)
    tier = _choose_source(rp, tier) if source == SECONDARY else _choose_tier(rp, tier)
    params: dict[str, Any] = {
        Param.RP: str(rp.pk),
        Param.KIND: kind,
        Param.LUNS: sorted(luns),
        Param.TIER: tier,
    }
    if kind == RestoreKind.REPLACE_DISKS:
        params.update(_replace_target(rp.protected_item, luns, target))
    else:
        params.update(_new_files_target(rp, kind, luns, target))
    _check_key(rp, tier)
    return _queue_restore(rp, kind, params, by=by, request=request)


def _check_restorable(rp: RecoveryPoint) -> None:
    if rp.soft_deleted_at is not None:
        raise ValidationError({"detail": "This recovery point is soft-deleted; undelete it first."})
    if rp.expires_at is not None and rp.expires_at <= timezone.now():
        latest = RecoveryPoint.objects.latest_of(rp.protected_item)
        if latest is None or latest.pk != rp.pk:
            raise ValidationError({"detail": "This recovery point has expired."})


def _checked_luns(rp: RecoveryPoint, kind: str, luns: object) -> list[int]:
    """The LUNs to restore (default: all the recovery point holds), each one it holds."""
    rp_luns = [d["lun"] for d in rp.disks]
    if luns is None:
        luns = rp_luns
    if (
        not isinstance(luns, list)
        or not luns
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in luns)
    ):
        raise ValidationError({"luns": "Give a non-empty list of LUNs (integers)."})
    missing = sorted(set(luns) - set(rp_luns))
    if missing:
        raise ValidationError(
            {
                "luns": f"LUN(s) {', '.join(map(str, missing))} are not in this recovery point "
                f"(it holds {', '.join(map(str, sorted(rp_luns)))})."
            }
        )
    if rp.excluded_luns and kind != RestoreKind.RESTORE_DISKS:
        raise ValidationError(
            {
                "kind": "This recovery point holds only some of the VM's disks (selective disk "
                "backup), so only restore_disks is offered."
            }
        )
    return luns


def _choose_source(rp: RecoveryPoint, tier: str) -> str:
    """The secondary copy: only for RPs replicated there, and it holds vault-tier copies."""
    if rp.replication != Replication.REPLICATED:
        raise ValidationError(
            {"source": "This recovery point has no copy in the secondary location yet."}
        )
    if tier not in (RestoreTier.AUTO, RestoreTier.VAULT):
        raise ValidationError(
            {"tier": "The secondary location holds vault-tier copies; leave the tier automatic."}
        )
    return RestoreTier.SECONDARY


def _choose_tier(rp: RecoveryPoint, tier: str) -> str:
    if tier == RestoreTier.SNAPSHOT and not rp.in_snapshot_tier:
        raise ValidationError({"tier": "This recovery point is no longer in the snapshot tier."})
    if tier == RestoreTier.VAULT and not rp.in_vault_tier:
        raise ValidationError({"tier": "This recovery point has not reached the vault tier yet."})
    if tier == RestoreTier.AUTO:
        return preferred_tier(rp)
    return tier


def _check_target_dir(rp: RecoveryPoint, target: object) -> tuple[Host, Path]:
    if not isinstance(target, dict):
        raise ValidationError({"target": 'Give {"host": <id>, "path": "<directory>"}.'})
    host_id, path = target.get("host"), target.get("path")
    if not isinstance(host_id, int) or isinstance(host_id, bool):
        raise ValidationError({"target.host": "Give the id of a host linked to this vault."})
    host = rp.vault.linked_hosts.filter(pk=host_id).first()
    if host is None:
        raise ValidationError({"target.host": "No host with this id is linked to this vault."})
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValidationError({"target.path": "Give an absolute directory path."})
    if not host.allows(path):
        raise ValidationError(
            {
                "target.path": f"Must be inside one of host {host.name}'s allowed roots: "
                f"{', '.join(host.allowed_roots)}."
            }
        )
    if not os.path.isdir(path):
        raise ValidationError({"target.path": f"Directory {path} does not exist."})
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValidationError({"target.path": f"Directory {path} is not writable."})
    # Resolved now, so the job can refuse any symlink it meets on the way down from the root.
    return host, Path(os.path.realpath(path))


def _new_files_target(
    rp: RecoveryPoint, kind: str, luns: list[int], target: dict[str, Any] | None
) -> dict[str, Any]:
    """Restore disks, create VM: new image files in a checked directory of a linked host (and,
    for a new VM, a name nobody has or holds)."""
    host, directory = _check_target_dir(rp, target)
    assert target is not None  # _check_target_dir refuses anything but a dict
    fmt = _checked_format(host, target)
    start = _checked_start(host, kind, target)
    vm_name = rp.protected_item.vm.name
    if kind == RestoreKind.CREATE_VM:
        vm_name = _checked_new_vm_name(target)
        if Disk.OS_LUN not in luns:
            raise ValidationError({"luns": "A new VM needs its OS disk (LUN -1)."})
        if host.connector == Connector.LIBVIRT:
            _check_domain_definition(rp, luns)
    files = {lun: str(directory / _disk_file_name(vm_name, lun, rp, fmt)) for lun in luns}
    taken = [f for f in files.values() if os.path.lexists(f)]
    if taken:
        raise ValidationError({"target.path": f"File(s) already exist: {', '.join(taken)}."})
    params: dict[str, Any] = {
        Param.HOST: host.pk,
        Param.PATH: str(directory),
        Param.FILES: {str(k): v for k, v in files.items()},
        Param.FORMATS: {str(k): fmt for k in files},
    }
    if kind == RestoreKind.CREATE_VM:
        params[Param.NAME] = vm_name
        params[Param.START] = start
    return params


def _checked_new_vm_name(target: dict[str, Any] | None) -> str:
    given = (target or {}).get("name")
    name = given if isinstance(given, str) else ""  # refused below, as an empty name is
    try:
        name_validator(name)
    except ValidationError:
        raise ValidationError({"target.name": name_validator.message}) from None
    if VirtualMachine.objects.filter(name=name).exists():
        raise ValidationError({"target.name": f"A VM named {name} already exists."})
    _check_name_free(name)
    return name


def _replace_target(
    item: ProtectedVM, luns: list[int], target: dict[str, Any] | None
) -> dict[str, Any]:
    """Replace disks: the stopped VM's own image files, checked now."""
    if target not in (None, {}):
        raise ValidationError(
            {"target": "Replace disks writes over the VM's own disks; give no target."}
        )
    vm = item.vm
    power = connector_for(vm.host.connector).probe_power_state(vm_spec(vm, luns))
    if power != PowerState.STOPPED:
        raise ValidationError(
            {"detail": f"{vm.name} is {power}; stop the VM before replacing its disks."}
        )
    vm_luns = {d.lun for d in vm.disks.all()}
    gone = sorted(set(luns) - vm_luns)
    if gone:
        raise ValidationError({"luns": f"{vm.name} no longer has LUN(s) {gone}."})
    files = _replaced_files(vm, luns)
    libvirt = vm.host.connector == Connector.LIBVIRT
    formats = {
        str(d.lun): QCOW2 if libvirt and d.format == QCOW2 else RAW
        for d in vm.disks.filter(lun__in=luns)
    }
    return {
        Param.HOST: vm.host_id,
        Param.FILES: {str(k): v for k, v in files.items()},
        Param.FORMATS: formats,
    }


def _check_key(rp: RecoveryPoint, tier: str) -> None:
    try:
        store = rp_store(rp, tier)
        if not store.has_manifest(str(rp.pk)):
            raise ValidationError({"tier": f"The {tier} tier no longer holds this recovery point."})
    except engine.KeyUnavailable as e:
        raise ValidationError({"detail": f"The vault's encryption key is unavailable: {e}"}) from e
    except engine.StoreNotFound as e:
        raise ValidationError({"tier": f"The {tier} tier cannot be read: {e}."}) from e
    except (TargetUnusable, engine.StoreUnavailable):
        # A store on object storage is the workers' to reach, with the credentials they read
        # (this process may have none), and a service down now may answer by then: the job
        # opens it on a worker and fails naming the cause if it cannot.
        pass


def _queue_restore(
    rp: RecoveryPoint,
    kind: str,
    params: dict[str, Any],
    *,
    by: User,
    request: HttpRequest | None,
) -> Job:
    """The restore job (holding a new VM's name), audited."""
    try:
        with transaction.atomic():
            subtasks = [TAKE_SAFETY_RP] if kind == RestoreKind.REPLACE_DISKS else []
            job = create_job(
                operation=Operation.RESTORE,
                vault=rp.vault,
                item=rp.protected_item,
                recovery_point=rp,
                by=by,
                params=params,
                subtasks=[*subtasks, RESTORE_DATA],
                reserved_vm_name=params.get(Param.NAME, ""),
            )
            audit.record(
                f"restore.{kind}",
                actor=by,
                request=request,
                vault=rp.vault,
                obj=rp,
                after={k: v for k, v in params.items() if k != Param.FILES} | {"job": job.pk},
            )
    except IntegrityError:
        # A twin request reserved the name between the check above and this insert.
        _check_name_free(params.get(Param.NAME, ""))
        raise
    return job


def _check_name_free(name: str) -> None:
    holder = vm_name_holder(name) if name else None
    if holder is not None:
        raise ValidationError(
            {"target.name": f"Restore job {holder.pk} is already creating a VM named {name}."}
        )


def _replaced_files(vm: VirtualMachine, luns: list[int]) -> dict[int, str]:
    """The image files replace disks writes over, resolved now and checked against the host's
    allowed roots, so the job writes exactly these files or refuses."""
    files: dict[int, str] = {}
    for disk in vm.disks.filter(lun__in=luns):
        real = os.path.realpath(disk.path)
        if not vm.host.allows(real):
            raise ValidationError(
                {
                    "luns": f"LUN {disk.lun}: {disk.path} leads outside host {vm.host.name}'s "
                    "allowed roots."
                }
            )
        if not os.path.isfile(real):
            raise ValidationError(
                {
                    "luns": f"LUN {disk.lun}: {disk.path} is not an image file; replace disks "
                    "writes image files only."
                }
            )
        files[disk.lun] = real
    return files


@contextlib.contextmanager
def _opened_targets(
    host: Host, files: dict[int, str], formats: dict[int, str], *, replacing: bool
) -> Iterator[dict[int, engine.RestoreTarget]]:
    """The checked targets opened once for the whole job, without following symlinks: each
    directory walked down from its allowed root and, when replacing, each disk file itself."""
    with contextlib.ExitStack() as opened:
        dirs: dict[str, int] = {}
        targets: dict[int, engine.RestoreTarget] = {}
        try:
            for lun, path in files.items():
                directory, name = os.path.split(path)
                if directory not in dirs:
                    dirs[directory] = engine.open_directory(directory, host.allowed_roots)
                    opened.callback(os.close, dirs[directory])
                replaces = None
                if replacing:
                    replaces = engine.open_target_file(dirs[directory], name, path)
                    opened.callback(os.close, replaces)
                targets[lun] = engine.RestoreTarget(
                    dirs[directory], name, replaces, path, format=formats.get(lun, RAW)
                )
        except engine.EngineError as e:
            folders = ", ".join(sorted({os.path.dirname(p) for p in files.values()}))
            raise _restore_error(e, f"The restore target's disk ({folders})") from e
        yield targets


def _restore_error(e: engine.EngineError, where: str) -> JobError:
    if isinstance(e, engine.TargetChanged):
        return JobError(
            "target_changed",
            f"The restore target changed after the restore was requested, so nothing was "
            f"written: {e}.",
        )
    return engine_error(e, where)


def _restore_into(
    ctx: JobContext, rp: RecoveryPoint, tier: str, targets: dict[int, engine.RestoreTarget]
) -> engine.RestoreResult:
    try:
        store = rp_store(rp, tier)
        sizes = {d["lun"]: d["size"] for d in rp.disks if d["lun"] in targets}
        return engine.restore(
            store,
            str(rp.pk),
            targets,
            progress=EngineProgress(ctx, "restore", sizes),
            cancel=ctx.cancelled,
            marker=restore_marker(ctx.job.pk),
        )
    except engine.Cancelled as e:
        raise JobCancelled() from e
    except engine.EngineError as e:
        folders = ", ".join(sorted({str(Path(t.shown).parent) for t in targets.values()}))
        raise _restore_error(e, f"The restore target's disk ({folders})") from e


def _safety_source(
    lun: int, path: str, formats: dict[int, str], targets: dict[int, engine.RestoreTarget]
) -> engine.DiskSource:
    """The disk about to be replaced, as its guest sees it: a qcow2 file is read through a
    read-only qemu-nbd of the very file the restore holds open (not its container bytes)."""
    if formats.get(lun, RAW) == RAW:
        return engine.DiskSource(lun, path)
    held = f"/proc/{os.getpid()}/fd/{targets[lun].replaces}"
    return engine.DiskSource(lun, path, reader=partial(NbdReader.file, held, formats[lun]))


def _take_safety_rp(
    ctx: JobContext,
    rp: RecoveryPoint,
    files: dict[int, str],
    formats: dict[int, str],
    targets: dict[int, engine.RestoreTarget],
) -> RecoveryPoint:
    """Back up the files about to be replaced (the stopped VM's disks) before anything is
    overwritten."""
    item, vault = rp.protected_item, rp.vault
    vm = item.vm
    luns = sorted(files)
    sizes = {d.lun: d.size for d in vm.disks.all()}
    now = timezone.now()
    safety_id = str(uuid.uuid4())
    expires = now + timedelta(days=SAFETY_DAYS)
    try:
        store = open_or_create_snapshot_store(vault, vm.host, kek_for(vault))
        result = engine.backup(
            engine.BackupRequest(
                store=store,
                disks=[_safety_source(lun, files[lun], formats, targets) for lun in luns],
                vm_name=vm.name,
                consistency=RPConsistency.CRASH,
                tags=[RecoveryPoint.ON_DEMAND],
                retain_until=store_retain_until(vault, expires),
                labels={"vault": vault.name, "job": str(ctx.job.pk), "safety_for": str(rp.pk)},
                rp_id=safety_id,
            ),
            progress=EngineProgress(ctx, "safety", {lun: sizes.get(lun, 0) for lun in luns}),
            cancel=ctx.cancelled,
        )
    except engine.Cancelled as e:
        raise JobCancelled() from e
    except engine.EngineError as e:
        raise engine_error(
            e, f"The snapshot disk of host {vm.host.name} ({vm.host.snapshot_root})"
        ) from e
    all_luns = [d.lun for d in vm.disks.all()]
    return record_recovery_point(
        ctx.job.pk,
        RecoveryPoint(
            id=safety_id,
            vault=vault,
            protected_item=item,
            time=now,
            consistency=RPConsistency.CRASH,
            in_snapshot_tier=True,
            snapshot_expires_at=now + timedelta(days=item.policy.instant_restore_days),
            tags=[RecoveryPoint.ON_DEMAND],
            expires_at=expires,
            retain_until=expires,
            disks=[
                {"lun": d.lun, "size": d.size, "bytes_stored": d.bytes_stored} for d in result.disks
            ],
            included_luns=luns,
            excluded_luns=[lun for lun in all_luns if lun not in luns],
            size_bytes=sum(d.size for d in result.disks),
            transfer_due=True,
            # The domain's checkpoints are dropped with its disks: the next backup, whose
            # parent this is, reads in full and says why.
            hypervisor=(
                {"checkpoint": None, "chain_break": "domain_restored"}
                if vm.host.connector == Connector.LIBVIRT
                else {}
            ),
        ),
    )


@runner.handles(Operation.RESTORE)
def run_restore(ctx: JobContext) -> None:
    params = ctx.job.params
    rp = RecoveryPoint.objects.select_related(
        "vault", "protected_item__vm__host", "protected_item__policy"
    ).get(pk=params[Param.RP])
    kind, tier = params[Param.KIND], params[Param.TIER]
    host = Host.objects.get(pk=params[Param.HOST])
    files = {int(k): v for k, v in params[Param.FILES].items()}
    formats = {int(k): v for k, v in params.get(Param.FORMATS, {}).items()}

    replacing = kind == RestoreKind.REPLACE_DISKS
    with _opened_targets(host, files, formats, replacing=replacing) as targets:
        if replacing:
            sub = ctx.start_subtask(TAKE_SAFETY_RP)
            safety = _take_safety_rp(ctx, rp, files, formats, targets)
            ctx.set_result(safety_recovery_point=str(safety.pk))
            ctx.end_subtask(sub, Status.COMPLETED, f"Safety recovery point {safety.pk}")
        sub = ctx.start_subtask(RESTORE_DATA)
        result = _restore_into(ctx, rp, tier, targets)
    sizes = {d["lun"]: d["size"] for d in rp.disks}
    if kind == RestoreKind.CREATE_VM:
        domain = None
        if host.connector == Connector.LIBVIRT:
            domain = hypervisor.define_restored_domain(
                host, rp, params[Param.NAME], files, formats, start=bool(params.get(Param.START))
            )
            ctx.set_result(domain={"name": domain.name, "uuid": domain.uuid})
        vm = _register_vm(ctx, rp, host, files, sizes, formats, domain)
        ctx.set_result(new_vm=vm.pk)
    elif replacing:
        vm = rp.protected_item.vm
        for disk in vm.disks.filter(lun__in=files):
            Disk.objects.filter(pk=disk.pk).update(size=sizes[disk.lun])
        if host.connector == Connector.LIBVIRT:
            # The domain's bitmaps described the old files: its next backup reads in full.
            hypervisor.forget_change_tracking(vm)
    ctx.set_result(
        targets={str(k): v for k, v in files.items()},
        bytes_written=result.bytes_written,
        seconds=round(result.duration, 3),
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{len(files)} disk(s) restored from the "
        f"{'secondary copy' if tier == RestoreTier.SECONDARY else f'{tier} tier'}, "
        f"{mib(result.bytes_written)} written",
    )


def _register_vm(
    ctx: JobContext,
    rp: RecoveryPoint,
    host: Host,
    files: dict[int, str],
    sizes: dict[int, int],
    formats: dict[int, str],
    domain: hypervisor.DefinedDomain | None,
) -> VirtualMachine:
    name = ctx.job.params[Param.NAME]
    targets = {d["lun"]: d.get("target", "") for d in rp.disks}
    try:
        with transaction.atomic():
            vm = VirtualMachine.objects.create(
                name=name,
                host=host,
                os_type=rp.protected_item.vm.os_type,
                power_state=(
                    PowerState.RUNNING if domain and domain.started else PowerState.STOPPED
                ),
                domain_uuid=domain.uuid if domain else "",
            )
            for lun, path in files.items():
                Disk.objects.create(
                    vm=vm,
                    lun=lun,
                    path=path,
                    size=sizes[lun],
                    target=targets.get(lun, "") if domain else "",
                    format=formats.get(lun, RAW) if domain else "",
                )
            audit.record(
                "vm.create_from_restore",
                actor=ctx.job.created_by,
                vault=rp.vault,
                obj=vm,
                after={"host": host.name, "disks": files},
            )
    except IntegrityError as e:
        # Only a VM created outside restores since the request can take the held name.
        raise JobError(
            "name_taken",
            f"A VM named {name} was created while its disks were restored; the restored disks "
            f"are kept at {', '.join(files.values())}.",
        ) from e
    return vm
