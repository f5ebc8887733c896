"""What the demo lab consists of: three VMs, their disks and the files staged into each image.

Django-free; ``inventory.demo`` turns it into rows, ``manage.py lab`` runs it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

HOST = "demo-host"
VAULT = "demo-vault"
LICENSES = Path("/usr/share/common-licenses")


@dataclass(frozen=True)
class LabDisk:
    lun: int  # -1 = OS disk
    size_mib: int

    @property
    def tag(self) -> str:
        return "os" if self.lun < 0 else f"data{self.lun}"


@dataclass(frozen=True)
class LabVM:
    name: str
    power: str  # "running" or "stopped"
    pre_script: str  # script file name in <DEMO_ROOT>/scripts
    post_script: str
    disks: tuple[LabDisk, ...]
    role: str  # what it shows, for the start-up message and `lab status`

    def image_name(self, disk: LabDisk) -> str:
        return f"{self.name}-{disk.tag}.img"


LAB_VMS: tuple[LabVM, ...] = (
    LabVM(
        "demo-app-01",
        "running",
        "pre-ok.sh",
        "post-ok.sh",
        (LabDisk(-1, 48), LabDisk(0, 32)),
        "pre/post scripts succeed, freeze pauses its writer -> application",
    ),
    LabVM(
        "demo-db-01",
        "running",
        "pre-fail.sh",
        "post-ok.sh",
        (LabDisk(-1, 48), LabDisk(0, 64), LabDisk(1, 32)),
        "pre-script fails (continue on failure), freeze succeeds -> file_system",
    ),
    LabVM(
        "demo-old-01",
        "stopped",
        "pre-ok.sh",
        "post-ok.sh",
        (LabDisk(-1, 48),),
        "stopped, no hooks run -> crash",
    ),
)
LAB_VM_NAMES = tuple(vm.name for vm in LAB_VMS)


def lab_vm(name: str) -> LabVM | None:
    return next((vm for vm in LAB_VMS if vm.name == name), None)


def _pseudo_random(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _text_lines(seed: str, lines: int) -> bytes:
    rng = random.Random(seed)
    words = ("backup", "vault", "chunk", "ring", "snapshot", "disk", "freeze", "thaw", "policy")
    out = [
        f"{i:05d} {' '.join(rng.choice(words) for _ in range(rng.randint(4, 12)))}"
        for i in range(lines)
    ]
    return ("\n".join(out) + "\n").encode()


RING_README = b"""\
/lab/ring.dat is this lab VM's "application data": a ring of 512-byte records with
sequence numbers, written by the lab's writer process straight into this file's
physical blocks (the file system's metadata never changes).  A consistent backup
shows one unbroken run of sequence numbers around the ring; check a restored disk
with:  python manage.py lab check /path/to/restored.img
"""


def disk_files(vm: LabVM, disk: LabDisk) -> dict[str, bytes]:
    """Real files staged into a disk image (the ring file is added by make_image)."""
    files: dict[str, bytes] = {"/lab/README.txt": RING_README}
    if disk.lun < 0:
        devices = "bcdefgh"
        fstab = ["/dev/vda / ext4 defaults 0 1"]
        fstab += [
            f"/dev/vd{devices[i]} /srv/{d.tag} ext4 defaults 0 2"
            for i, d in enumerate(d for d in vm.disks if d.lun >= 0)
        ]
        files.update(
            {
                "/etc/hostname": f"{vm.name}\n".encode(),
                "/etc/fstab": ("\n".join(fstab) + "\n").encode(),
                "/etc/motd": f"{vm.name}: a Lifeboat demo lab VM ({vm.role}).\n".encode(),
                "/etc/os-release": b'NAME="Lifeboat Demo Linux"\nID=lifeboat-demo\n'
                b'VERSION_ID="1"\nPRETTY_NAME="Lifeboat Demo Linux 1"\n',
                "/var/log/boot.log": _text_lines(f"{vm.name}-boot", 2000),
                "/usr/lib/demo/libdemo.so.1": _pseudo_random("shared-libdemo", 768 << 10),
            }
        )
        # The same files on every OS disk: the vault stores them once.
        if LICENSES.is_dir():
            for name in ("Apache-2.0", "GPL-2", "GPL-3", "LGPL-2.1", "MPL-2.0"):
                src = LICENSES / name
                if src.is_file():
                    files[f"/usr/share/common-licenses/{name}"] = src.read_bytes()
    else:
        prefix = "/db" if "db" in vm.name else "/srv"
        files[f"{prefix}/README.txt"] = f"Data disk LUN {disk.lun} of {vm.name}.\n".encode()
        for i in range(4):
            files[f"{prefix}/table-{i}.dat"] = _pseudo_random(
                f"{vm.name}-{disk.lun}-{i}", 256 << 10
            )
        files[f"{prefix}/journal.log"] = _text_lines(f"{vm.name}-{disk.lun}-journal", 1500)
    return files
