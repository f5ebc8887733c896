"""Restoring onto a libvirt hypervisor: new domains from a recovery point's saved XML, disks
swapped under a shut-off domain, and the changed-block-tracking chain dropped so the next
backup reads in full.

The libvirt bindings are imported when a function needs them, so the engine imports on a
machine without libvirt; a missing binding is ``ConnectorError("libvirt_unavailable")``.
Domains are named by name or UUID.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.connectors.spec import ConnectorError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise ConnectorError(
            "libvirt_unavailable",
            "the libvirt Python bindings are missing: run scripts/kvm-host install and "
            "scripts/kvm-host bindings .venv (Debian package python3-libvirt)",
        ) from exc
    # Errors come back as exceptions; libvirt's default handler would also print them.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


@contextmanager
def _connect(uri: str) -> Iterator[Any]:
    libvirt = _libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ConnectorError("connect_failed", str(exc)) from exc
    try:
        yield conn
    finally:
        conn.close()


def _lookup(conn: Any, domain: str) -> Any:
    libvirt = _libvirt()
    try:
        if _UUID.match(domain):
            return conn.lookupByUUIDString(domain)
        return conn.lookupByName(domain)
    except libvirt.libvirtError as exc:
        raise ConnectorError("domain_not_found", str(exc)) from exc


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ConnectorError(
            "libvirt_unavailable", "qemu-img is not installed (Debian package qemu-utils)"
        ) from exc
    return r


# -- a new domain from a saved one ------------------------------------------------------------


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    return (target.get("dev") or "") if target is not None else ""


def _set_file(disk: ET.Element, path: Path | str, fmt: str) -> None:
    """Make ``disk`` a plain file of format ``fmt``: no backing chain, mirror or alias of the
    disk it was."""
    disk.set("type", "file")
    for child in list(disk):
        if child.tag in ("source", "backingStore", "mirror", "alias"):
            disk.remove(child)
    driver = disk.find("driver")
    if driver is None:
        driver = ET.Element("driver", {"name": "qemu"})
        disk.insert(0, driver)
    driver.set("type", fmt)
    disk.insert(list(disk).index(driver) + 1, ET.Element("source", {"file": str(path)}))


def new_domain_xml(saved_xml: str, name: str, disks: Mapping[str, tuple[Path | str, str]]) -> str:
    """The saved (inactive) domain XML made into a new domain ``name`` on restored disks.

    ``disks`` maps a disk's target (``vda``) to its new file and format; every other
    ``device='disk'`` disk is left out.  libvirt gives the new domain its own UUID and MAC
    addresses; unix sockets and the NVRAM file get their own paths from libvirt, so the new
    domain can run beside the original.  What a running domain or a backup job adds to the XML
    (ids, aliases, backing chains, mirrors, source indexes) is dropped.
    """
    try:
        root = ET.fromstring(saved_xml)
    except ET.ParseError as exc:
        raise ConnectorError(
            "invalid_domain_xml", f"saved domain XML does not parse: {exc}"
        ) from exc
    if root.tag != "domain":
        raise ConnectorError("invalid_domain_xml", f"root element is <{root.tag}>, not <domain>")
    root.attrib.pop("id", None)
    name_el = root.find("name")
    if name_el is None:
        name_el = ET.SubElement(root, "name")
    name_el.text = name
    for el in root.findall("uuid"):
        root.remove(el)
    # A running domain's XML: labels and aliases belong to the running original.
    for el in root.findall("seclabel"):
        if el.get("type") == "dynamic":
            root.remove(el)
    nvram = root.find("os/nvram")
    if nvram is not None:
        nvram.text = None  # libvirt makes a fresh one from the template, per domain

    devices = root.find("devices")
    found: set[str] = set()
    if devices is not None:
        for iface in devices.findall("interface"):
            for mac in iface.findall("mac"):
                iface.remove(mac)
            for el in iface.findall("target"):
                iface.remove(el)  # the original's tap device name
        for chan in devices.findall("channel"):
            src = chan.find("source")
            if chan.get("type") == "unix" and src is not None and src.get("mode") == "bind":
                src.attrib.pop("path", None)
        for disk in devices.findall("disk"):
            if disk.get("device", "disk") != "disk":
                continue
            dev = _target(disk)
            if dev not in disks:
                devices.remove(disk)
                continue
            found.add(dev)
            _set_file(disk, *disks[dev])
        for el in devices.iter():
            for child in list(el):
                if child.tag == "alias":
                    el.remove(child)
    missing = sorted(set(disks) - found)
    if missing:
        raise ConnectorError(
            "disk_not_found", f"the saved domain has no disk with target {', '.join(missing)}"
        )
    return ET.tostring(root, encoding="unicode")


def define_domain(uri: str, xml: str, start: bool) -> tuple[str, str]:
    """Define (and start) a domain; its name and UUID.  A domain that was defined but would
    not start stays defined: ``ConnectorError("start_failed")`` names it."""
    libvirt = _libvirt()
    with _connect(uri) as conn:
        try:
            dom = conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise ConnectorError("define_failed", str(exc)) from exc
        name, uuid = dom.name(), dom.UUIDString()
        if start:
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                raise ConnectorError(
                    "start_failed", f"domain {name} ({uuid}) was defined but did not start: {exc}"
                ) from exc
        return name, uuid


# -- the changed-block-tracking chain ---------------------------------------------------------


def _disk_files(dom: Any, libvirt: Any) -> dict[str, tuple[str, str]]:
    """target → (file, driver type) of the file-backed disks, from the persistent XML."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    out = {}
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.get("type") != "file":
            continue
        target, source, driver = disk.find("target"), disk.find("source"), disk.find("driver")
        if target is None or source is None or not source.get("file"):
            continue
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        out[str(target.get("dev"))] = (str(source.get("file")), fmt)
    return out


def _file_bitmaps(path: str) -> list[str]:
    r = _qemu_img("info", "-U", "--output=json", path)
    if r.returncode != 0:
        raise ConnectorError("disk_unreadable", f"qemu-img info {path}: {r.stderr.strip()}")
    data = json.loads(r.stdout).get("format-specific", {}).get("data", {})
    return [b["name"] for b in data.get("bitmaps", [])]


def _drop(conn: Any, dom: Any) -> None:
    libvirt = _libvirt()
    try:
        # Metadata only, one at a time, leaves first: deleting with children after a failed
        # delete crashed libvirtd 9.0, and a checkpoint whose bitmap is gone cannot be merged.
        checkpoints = dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
        for cp in reversed(checkpoints):
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        if dom.isActive():
            import libvirt_qemu

            query = '{"execute":"query-named-block-nodes","arguments":{"flat":true}}'
            nodes = json.loads(libvirt_qemu.qemuMonitorCommand(dom, query, 0))["return"]
            for node in nodes:
                for bm in node.get("dirty-bitmaps") or []:
                    cmd = {
                        "execute": "block-dirty-bitmap-remove",
                        "arguments": {"node": node["node-name"], "name": bm["name"]},
                    }
                    libvirt_qemu.qemuMonitorCommand(dom, json.dumps(cmd), 0)
            return
    except libvirt.libvirtError as exc:
        raise ConnectorError("checkpoint_delete_failed", str(exc)) from exc
    for path, fmt in _disk_files(dom, libvirt).values():
        if fmt != "qcow2":
            continue
        for name in _file_bitmaps(path):
            r = _qemu_img("bitmap", "--remove", path, name)
            if r.returncode != 0:
                raise ConnectorError(
                    "checkpoint_delete_failed",
                    f"qemu-img bitmap --remove {path} {name}: {r.stderr.strip()}",
                )


def drop_checkpoints(uri: str, domain: str) -> None:
    """Forget the domain's changed-block tracking: every checkpoint's metadata and every
    persistent bitmap of its qcow2 disks (through QEMU when running, qemu-img when shut off),
    so the next backup reads in full and starts a new chain."""
    with _connect(uri) as conn:
        _drop(conn, _lookup(conn, domain))


def replace_disk_files(uri: str, domain: str, files: Mapping[str, Path | str]) -> None:
    """Point a shut-off domain's disks (by target) at other files, each with its own format,
    and drop its checkpoints: the old chain described the old files.  The old files stay
    where they are."""
    libvirt = _libvirt()
    with _connect(uri) as conn:
        dom = _lookup(conn, domain)
        if dom.isActive():
            raise ConnectorError(
                "domain_running", f"domain {dom.name()} is running; shut it off first"
            )
        for target, path in files.items():
            if not Path(path).is_file():
                raise ConnectorError("disk_not_found", f"{target}: no file {path}")
        formats = {t: disk_format(p) for t, p in files.items()}
        _drop(conn, dom)
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        seen: set[str] = set()
        for disk in root.findall("devices/disk"):
            dev = _target(disk)
            if dev not in files or disk.get("device", "disk") != "disk":
                continue
            seen.add(dev)
            _set_file(disk, files[dev], formats[dev])
        missing = sorted(set(files) - seen)
        if missing:
            raise ConnectorError(
                "disk_not_found",
                f"domain {dom.name()} has no disk with target {', '.join(missing)}",
            )
        try:
            conn.defineXML(ET.tostring(root, encoding="unicode"))
        except libvirt.libvirtError as exc:
            raise ConnectorError("define_failed", str(exc)) from exc


# -- disk files -------------------------------------------------------------------------------


def to_qcow2(raw_path: Path | str, dest: Path | str) -> Path:
    """A qcow2 copy of a raw image; zero runs stay unallocated."""
    out = Path(dest)
    r = _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw_path), str(out))
    if r.returncode != 0:
        try:
            os.unlink(out)
        except FileNotFoundError:
            pass
        raise ConnectorError("convert_failed", f"qemu-img convert {raw_path}: {r.stderr.strip()}")
    return out


def disk_format(path: Path | str) -> str:
    """The image format qemu-img detects ("raw", "qcow2", ...); readable while in use.

    A raw disk whose guest wrote an image header at its start looks like that image, backing
    file included, and a domain defined with the detected format would read the host file it
    names.  Restores never make backing chains, so an image with one is refused."""
    r = _qemu_img("info", "-U", "--output=json", str(path))
    if r.returncode != 0:
        raise ConnectorError("disk_unreadable", f"qemu-img info {path}: {r.stderr.strip()}")
    info = json.loads(r.stdout)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ConnectorError(
            "backing_file",
            f"{path} names a backing file ({info.get('backing-filename')}); restored disks "
            "never do, so its format is not trusted",
        )
    if info.get("format-specific", {}).get("data", {}).get("data-file"):
        raise ConnectorError("backing_file", f"{path} names an external data file")
    return str(info["format"])
