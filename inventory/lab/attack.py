"""A simulated ransomware attack on a lab VM's disk image, so the ransomware signal can be seen.

Every regular file of the image's file system (or a share of them, spread by path) is removed
and written again, renamed `<name>.locked`, with random bytes of its size: what encryption by
malware leaves behind (data that neither compresses nor repeats, under new names). Lab images
only: the caller pauses the VM's writer, as for churn.
"""

import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engine import fs as efs
from inventory.lab.images import require_tools
from inventory.lab.ring import RING_PATH, find_tool

LOCKED_SUFFIX = ".locked"


@dataclass
class AttackResult:
    image: Path
    encrypted: list[str] = field(default_factory=list)  # new paths inside the file system
    bytes_written: int = 0


def documents(seed: str, count: int = 16, size: int = 512 << 10) -> dict[str, bytes]:
    """A user's files for an image to attack: text that compresses, as most of a VM's data
    does (`make_image` files)."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(2000)]
    files = {}
    for i in range(count):
        text = b" ".join(rng.choice(words) for _ in range(size // 8))
        files[f"/home/user/doc-{i:02}.txt"] = text[:size]
    return {**files, "/etc/hostname": seed.encode()[:60] + b"\n"}


def _victims(path: Path, share: float) -> list[tuple[str, int]]:
    """(path, size) of the regular files the attack hits: `share` of them, spread by path."""
    with efs.FileByteSource(path) as source, efs.open_filesystem(source) as fs:
        files = sorted(
            (e.path, e.size)
            for _, _, entries in fs.walk("/")
            for e in entries
            if e.kind == "file" and not e.path.endswith(LOCKED_SUFFIX) and e.path != RING_PATH
        )
    if share >= 1:
        return files
    step = max(1, round(1 / share)) if share > 0 else len(files) + 1
    return files[::step]


def attack_image(path: Path, share: float = 1.0) -> AttackResult:
    """Replace `share` of the image's files by random bytes named `<name>.locked`
    (``debugfs -w``); the lab's ring file is spared, so `lab check` still reads it."""
    require_tools()
    result = AttackResult(path)
    rng = random.Random()
    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lab-attack-") as tmpdir:
        for i, (victim, size) in enumerate(_victims(path, share)):
            local = Path(tmpdir) / f"{i}.bin"
            local.write_bytes(rng.randbytes(size))
            commands += [f'rm "{victim}"', f'write {local} "{victim}{LOCKED_SUFFIX}"']
            result.encrypted.append(victim + LOCKED_SUFFIX)
            result.bytes_written += size
        script = Path(tmpdir) / "commands"
        script.write_text("\n".join(commands) + "\n")
        r = subprocess.run(
            [find_tool("debugfs"), "-w", "-f", str(script), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"debugfs failed on {path}: {r.stderr.strip()}")
    return result
