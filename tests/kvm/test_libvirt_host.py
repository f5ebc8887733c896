"""Test connection, discovery, power probe and the guest-agent check against real libvirtd."""

from __future__ import annotations

import pytest

from engine.connectors import ConnectorError, LibvirtConnector
from tests.kvm.conftest import MakeDomain

MiB = 1 << 20


def test_test_connection_reports_versions(libvirt_uri: str) -> None:
    info = LibvirtConnector().test_connection(libvirt_uri)
    assert info.uri == libvirt_uri and info.hostname
    assert info.libvirt_version.count(".") == 2 and info.hypervisor_version.count(".") == 2
    assert int(info.libvirt_version.split(".")[0]) >= 9


def test_test_connection_bad_uri_gives_libvirts_message(libvirt_uri: str) -> None:
    with pytest.raises(ConnectorError) as e:
        LibvirtConnector().test_connection("qemu+tcp://127.0.0.1:1/system")
    assert e.value.code == "connect_failed"
    assert "unable to connect to server at '127.0.0.1:1'" in e.value.message


def test_discover_lists_domains_disks_and_state(make_domain: MakeDomain, libvirt_uri: str):
    running = make_domain([("vda", "qcow2", 64), ("vdb", "raw", 32)])
    stopped = make_domain([("vda", "qcow2", 48)], start=False)
    found = {d.name: d for d in LibvirtConnector().discover(libvirt_uri)}
    r, s = found[running.name], found[stopped.name]
    assert (r.uuid, r.power_state) == (running.uuid, "running")
    assert [(d.target, d.path, d.format, d.virtual_size, d.boot) for d in r.disks] == [
        ("vda", str(running.disks["vda"]), "qcow2", 64 * MiB, True),
        ("vdb", str(running.disks["vdb"]), "raw", 32 * MiB, False),
    ]
    assert s.power_state == "stopped"
    assert [(d.target, d.virtual_size, d.boot) for d in s.disks] == [("vda", 48 * MiB, True)]
    assert f"<name>{stopped.name}</name>" in s.xml


def test_power_probe_and_agent_check(make_domain: MakeDomain, protect) -> None:
    dom = make_domain()
    p = protect(dom)
    c = LibvirtConnector()
    vm = p.vm("00000000-0000-0000-0000-000000000003")
    assert c.probe_power_state(vm) == "running"
    status = c.validate_extension(vm)
    assert (status.state, status.code) == ("failed", "agent_unavailable")
    assert "guest agent" in status.message
    dom.destroy()
    assert c.probe_power_state(vm) == "stopped"
    assert c.validate_extension(vm).code == "agent_unavailable"
