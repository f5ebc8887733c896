"""What jobs do to a libvirt domain beyond reading its disks: define the domain a restore
created, drop the change tracking of a domain whose disks were replaced, thaw a domain whose
backup lost its worker. The libvirt calls themselves are the engine's
(`engine.connectors.libvirt_domains`, `engine.connectors.libvirt`)."""

import logging
from dataclasses import dataclass

from engine.connectors import libvirt as libvirt_connector
from engine.connectors import libvirt_domains as domains
from engine.connectors.spec import ConnectorError
from inventory.models import Host, VirtualMachine
from jobs.runner import JobError
from vaults.models import RecoveryPoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefinedDomain:
    """The domain a create-VM restore defined on the hypervisor."""

    name: str
    uuid: str
    started: bool


def define_restored_domain(
    host: Host,
    rp: RecoveryPoint,
    name: str,
    files: dict[int, str],
    formats: dict[int, str],
    *,
    start: bool,
) -> DefinedDomain:
    """A new domain from the recovery point's saved XML: new name, UUID and MAC addresses, its
    disks the restored files (matched by target). Returns its name and UUID."""
    targets = {d["lun"]: d["target"] for d in rp.disks}
    disks = {targets[lun]: (path, formats.get(lun, "qcow2")) for lun, path in files.items()}
    xml = domains.new_domain_xml(rp.hypervisor["domain_xml"], name, disks)
    try:
        defined, uuid = domains.define_domain(host.libvirt_uri, xml, start=start)
    except ConnectorError as e:
        raise JobError(
            "domain_not_defined",
            f"The disks were restored ({', '.join(files.values())}), but libvirt on host "
            f"{host.name} refused the new domain: {e.message}",
        ) from e
    return DefinedDomain(defined, uuid, start)


def forget_change_tracking(vm: VirtualMachine) -> None:
    """After its disks were replaced, a domain's checkpoints describe files that are gone:
    drop them, so nothing could take them for the truth. Failing here is harmless (the next
    backup finds no usable checkpoint and reads in full), so it is only logged."""
    try:
        domains.drop_checkpoints(vm.host.libvirt_uri, vm.domain_uuid)
    except ConnectorError as e:
        log.warning("%s: could not drop the domain's checkpoints: %s", vm.name, e.message)


def thaw_after_worker_lost(vm: VirtualMachine) -> tuple[bool, str]:
    """Thaw the guest's file systems through its agent (a thaw of a guest that is not frozen
    is harmless): the worker that froze them died before it could."""
    try:
        libvirt_connector.thaw(vm.host.libvirt_uri, vm.domain_uuid)
    except ConnectorError as e:
        return False, f"THAW FAILED after the worker was lost: {e.message}"
    return True, "Thawed through the guest agent after the worker was lost."
