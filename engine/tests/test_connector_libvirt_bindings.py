"""The engine imports without libvirt and libnbd; the libvirt connector then says what to
install."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["libvirt"] = None  # as if python3-libvirt were not installed
sys.modules["nbd"] = None
import engine, engine.connectors as c
from engine.connectors.nbd import NbdReader
for call in (lambda: c.connector_for("libvirt").test_connection("qemu:///system"),
             lambda: NbdReader.file("/nonexistent", "raw")):
    try:
        call()
    except c.ConnectorError as e:
        print(e.code, "|", e.message)
"""


def test_missing_bindings_raise_libvirt_unavailable() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(out) == 2
    for line in out:
        code, message = line.split(" | ")
        assert code == "libvirt_unavailable"
        assert "scripts/kvm-host install" in message and "python3-libnbd" in message
