"""Restoring onto libvirt with real domains: a new domain from saved XML, disks swapped under
a shut-off domain, and the checkpoint chain dropped (no checkpoint, no bitmap left)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from engine.connectors import libvirt_domains as ld
from engine.connectors.spec import ConnectorError
from inventory.lab import kvm_guest
from tests.kvm.guests import LIBVIRT_URI

SAVED = """<domain type='qemu' id='7'>
  <name>web</name>
  <uuid>0f3c2b1a-1111-2222-3333-444455556666</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/old/vda.qcow2' index='2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/old/vdb.raw'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <target dev='vnet3'/>
    </interface>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>"""


def test_new_domain_xml_takes_the_new_name_and_disks_and_nothing_of_the_original() -> None:
    root = ET.fromstring(ld.new_domain_xml(SAVED, "web-restored", {"vda": ("/new/a.raw", "raw")}))
    assert root.get("id") is None
    assert root.findtext("name") == "web-restored"
    assert root.find("uuid") is None
    assert root.find(".//mac") is None and root.find("devices/interface/target") is None
    assert root.find(".//alias") is None and root.find(".//backingStore") is None
    disks = root.findall("devices/disk[@device='disk']")
    assert len(disks) == 1
    d = disks[0]
    assert d.find("source").attrib == {"file": "/new/a.raw"}
    assert d.find("driver").get("type") == "raw"
    assert root.find("devices/disk[@device='cdrom']") is not None
    assert root.find("devices/channel/source").get("path") is None


def test_new_domain_xml_refuses_an_unknown_target() -> None:
    with pytest.raises(ConnectorError) as exc:
        ld.new_domain_xml(SAVED, "x", {"vdz": ("/new/z.qcow2", "qcow2")})
    assert exc.value.code == "disk_not_found"


needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img missing (scripts/kvm-host install)"
)


@needs_qemu_img
def test_to_qcow2_is_sparse_and_disk_format_detects_it(tmp_path: Path) -> None:
    raw = tmp_path / "d.raw"
    with open(raw, "wb") as fh:
        fh.truncate(256 << 20)
        fh.seek(100 << 20)
        fh.write(b"\x5a" * (1 << 20))
    q = ld.to_qcow2(raw, tmp_path / "d.qcow2")
    assert ld.disk_format(q) == "qcow2" and ld.disk_format(raw) == "raw"
    assert q.stat().st_blocks * 512 < 8 << 20
    same = subprocess.run(["qemu-img", "compare", str(raw), str(q)], capture_output=True)
    assert same.returncode == 0


@needs_qemu_img
def test_disk_format_refuses_an_image_naming_a_backing_file(tmp_path: Path) -> None:
    # What a guest could write at the start of its raw disk.
    base = tmp_path / "secret"
    base.write_bytes(b"not yours")
    evil = tmp_path / "restored.img"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(evil)],
        check=True,
    )
    with pytest.raises(ConnectorError) as exc:
        ld.disk_format(evil)
    assert exc.value.code == "backing_file"


# -- with libvirt ---------------------------------------------------------------------------


def qmp(dom: Any, command: str, **arguments: Any) -> Any:
    import libvirt_qemu

    msg = json.dumps({"execute": command, "arguments": arguments})
    return json.loads(libvirt_qemu.qemuMonitorCommand(dom, msg, 0))["return"]


def node_bitmaps(dom: Any) -> list[str]:
    return [
        b["name"]
        for n in qmp(dom, "query-named-block-nodes", flat=True)
        for b in n.get("dirty-bitmaps") or []
    ]


def file_bitmaps(path: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [b["name"] for b in json.loads(out)["format-specific"]["data"].get("bitmaps", [])]


def checkpoint(dom: Any, name: str) -> None:
    dom.checkpointCreateXML(
        f"<domaincheckpoint><name>{name}</name><disks>"
        "<disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>"
    )


def inactive_xml(dom: Any) -> str:
    import libvirt

    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_new_domain_from_an_osless_domain_defines_and_starts(
    osless_domain, adopt_domain, kvm_conn, tmp_path: Path
) -> None:
    src = osless_domain()
    checkpoint(src.dom, "cp1")
    copy = tmp_path / "copy.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "qcow2", str(src.disk), str(copy)], check=True
    )
    name = adopt_domain(f"t-lab-{uuid.uuid4().hex[:8]}")
    xml = ld.new_domain_xml(inactive_xml(src.dom), name, {"vda": (copy, "qcow2")})
    got_name, got_uuid = ld.define_domain(LIBVIRT_URI, xml, start=True)
    assert got_name == name and got_uuid != src.uuid
    new = kvm_conn.lookupByName(name)
    assert new.isActive()
    assert new.listAllCheckpoints() == []
    assert ET.fromstring(inactive_xml(new)).find("devices/disk/source").get("file") == str(copy)


def test_define_domain_reports_libvirts_message(kvm_conn) -> None:
    with pytest.raises(ConnectorError) as exc:
        ld.define_domain(LIBVIRT_URI, "<domain type='qemu'><name>t-lab-bad</name></domain>", False)
    assert exc.value.code == "define_failed" and exc.value.message


@pytest.mark.slow
def test_guest_restored_into_a_new_domain_boots_with_its_data(
    running_guest, adopt_domain, kvm_conn, tmp_path: Path
) -> None:
    g = running_guest(files={"hello.txt": b"hello from the original\n"})
    assert g.exec("/usr/local/bin/write-data.sh", "1").exitcode == 0
    raw = tmp_path / "restored.raw"
    g.dom.fsFreeze()
    try:
        subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "raw", str(g.disk), str(raw)], check=True
        )
    finally:
        g.dom.fsThaw()
    disk = ld.to_qcow2(raw, tmp_path / "restored.qcow2")
    name = adopt_domain(f"t-lab-{uuid.uuid4().hex[:8]}")
    xml = ld.new_domain_xml(inactive_xml(g.dom), name, {"vda": (disk, ld.disk_format(disk))})
    ld.define_domain(LIBVIRT_URI, xml, start=True)
    kvm_guest.wait_for_agent(kvm_conn, name, 180)
    new = kvm_conn.lookupByName(name)
    r = kvm_guest.guest_exec(new, "/bin/cat", ("/mnt/data/hello.txt",))
    assert r.stdout == b"hello from the original\n"
    size = kvm_guest.guest_exec(new, "/bin/stat", ("-c", "%s", "/mnt/data/file-1"))
    assert size.stdout.strip() == b"1048576"


def test_drop_checkpoints_while_running_leaves_no_checkpoint_and_no_bitmap(osless_domain) -> None:
    d = osless_domain()
    checkpoint(d.dom, "cp1")
    checkpoint(d.dom, "cp2")
    assert sorted(node_bitmaps(d.dom)) == ["cp1", "cp2"]
    ld.drop_checkpoints(LIBVIRT_URI, d.uuid)
    assert d.dom.listAllCheckpoints() == []
    assert node_bitmaps(d.dom) == []
    d.dom.destroy()
    assert file_bitmaps(d.disk) == []


def test_drop_checkpoints_while_shut_off_removes_the_persistent_bitmaps(osless_domain) -> None:
    d = osless_domain()
    checkpoint(d.dom, "cp1")
    checkpoint(d.dom, "cp2")
    d.dom.destroy()  # QEMU stores the persistent bitmaps in the qcow2 as it exits
    assert sorted(file_bitmaps(d.disk)) == ["cp1", "cp2"]
    ld.drop_checkpoints(LIBVIRT_URI, d.name)
    assert d.dom.listAllCheckpoints() == []
    assert file_bitmaps(d.disk) == []


def test_replace_disk_files_needs_a_shut_off_domain_and_drops_the_chain(
    osless_domain, tmp_path: Path
) -> None:
    d = osless_domain()
    checkpoint(d.dom, "cp1")
    raw = tmp_path / "new.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "64M"], check=True)
    with pytest.raises(ConnectorError) as exc:
        ld.replace_disk_files(LIBVIRT_URI, d.uuid, {"vda": raw})
    assert exc.value.code == "domain_running"
    d.dom.destroy()
    ld.replace_disk_files(LIBVIRT_URI, d.uuid, {"vda": raw})
    disk = ET.fromstring(inactive_xml(d.dom)).find("devices/disk")
    assert disk.find("source").get("file") == str(raw)
    assert disk.find("driver").get("type") == "raw"
    assert d.dom.listAllCheckpoints() == []
    assert file_bitmaps(d.disk) == []  # the old file has no stale bitmap either
    d.dom.create()
    assert d.dom.isActive()


def test_unknown_domain_is_domain_not_found(kvm_conn) -> None:
    with pytest.raises(ConnectorError) as exc:
        ld.drop_checkpoints(LIBVIRT_URI, "t-lab-no-such-domain")
    assert exc.value.code == "domain_not_found"
