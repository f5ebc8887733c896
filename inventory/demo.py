"""The demo lab: a host and a few VMs whose disks are real ext4 images.

Made with `mkfs.ext4 -d` (no root needed) under LIFEBOAT's DEMO_ROOT on first start, so a new
user can protect, back up and restore something real at once.
"""

import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.db import transaction

from inventory.models import Disk, Host, VirtualMachine

DEMO_HOST = "demo-host"
# name → [(lun, size in MiB)]; small, so the first backup takes seconds.
DEMO_VMS = {
    "demo-web-01": [(-1, 48), (0, 32)],
    "demo-db-01": [(-1, 48), (0, 64), (1, 32)],
    "demo-win-01": [(-1, 48)],
}


def make_ext4_image(path: Path, size_mib: int, label: str) -> None:
    """A real ext4 image filled with a few files, made without root."""
    staging = path.with_suffix(".d")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "etc").mkdir(parents=True)
    (staging / "data").mkdir()
    (staging / "etc" / "hostname").write_text(f"{label}\n")
    (staging / "data" / "README.txt").write_text(f"Demo disk {label} made by Lifeboat.\n")
    for i in range(4):
        (staging / "data" / f"block-{i}.bin").write_bytes(
            (f"{label}-{i}-".encode() * 50000)[: 256 * 1024]
        )
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
    subprocess.run(
        [mkfs, "-q", "-F", "-L", label[:16], "-d", str(staging), str(path)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(staging, ignore_errors=True)


def ensure_demo_lab() -> list[str]:
    """Create the demo host and VMs if missing; return lines to print."""
    if Host.objects.filter(name=DEMO_HOST).exists():
        return []
    root = Path(settings.LIFEBOAT["DEMO_ROOT"]).resolve()
    disks_dir, restores_dir, snaps = root / "disks", root / "restores", root / "snapshots"
    for d in (disks_dir, restores_dir, snaps):
        d.mkdir(parents=True, exist_ok=True)
    with transaction.atomic():
        host = Host.objects.create(
            name=DEMO_HOST,
            snapshot_root=str(snaps),
            allowed_roots=[str(disks_dir), str(restores_dir)],
        )
        for name, disks in DEMO_VMS.items():
            vm = VirtualMachine.objects.create(
                name=name, host=host, os_type="windows" if "win" in name else "linux"
            )
            for lun, size in disks:
                path = disks_dir / f"{name}-lun{lun}.img"
                if not path.exists():
                    make_ext4_image(path, size, f"{name}-{lun}")
                Disk.objects.create(vm=vm, lun=lun, path=str(path), size=path.stat().st_size)
    return [f"Demo lab: host {DEMO_HOST} with {len(DEMO_VMS)} VMs under {root}"]
