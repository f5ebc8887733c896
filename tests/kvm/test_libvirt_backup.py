"""Full and incremental backups of a running domain through LibvirtConnector into a real
engine store, restored and compared with the domain's disk."""

from __future__ import annotations

from pathlib import Path

from tests.kvm.conftest import G, MakeDomain, granules, qemu_io

MiB = 1 << 20
CHUNK = 1 << 20  # the engine's default chunk size


def test_full_then_incremental_reads_only_dirty_extents(
    make_domain: MakeDomain, protect, tmp_path: Path
) -> None:
    dom = make_domain([("vda", "qcow2", 64)])
    p = protect(dom)
    qemu_io(dom, 0xAB, 1 * MiB, 64 << 10)
    qemu_io(dom, 0xCD, 30 * MiB, 200 << 10)

    full = p.back_up()
    o = full.outcome
    assert (o.method, o.power_state, o.consistency) == ("backup_job", "running", "crash")
    assert [w[0] for w in o.warnings] == ["agent_unavailable"]
    assert o.checkpoint == f"lifeboat-{full.rp_id}"
    assert o.checkpoint in dom.checkpoints()
    assert "<domain" in o.domain_xml and dom.name in o.domain_xml
    v = full.view()
    assert (v.change_detection, v.change_reason, v.changed_extents) == ("full", "no_parent", None)
    assert v.size == 64 * MiB
    # Only the allocated ranges were read.
    assert full.disk().bytes_read <= 2 * CHUNK
    p.restore_and_compare(full, tmp_path)

    writes = [(0x11, 10 * MiB, 64 << 10), (0x22, 40 * MiB + 4096, 4096), (0x33, 63 * MiB, MiB)]
    for pat, off, ln in writes:
        qemu_io(dom, pat, off, ln)
    inc = p.back_up()
    v = inc.view()
    assert v.change_detection == "dirty_bitmap" and v.change_reason == ""
    assert granules(list(v.changed_extents)) == granules([(o, n) for _, o, n in writes])
    assert all(o % G == 0 and n % G == 0 for o, n in v.changed_extents)
    chunks = {c for _, o, n in writes for c in range(o // CHUNK, (o + n - 1) // CHUNK + 1)}
    assert 0 < inc.disk().bytes_read <= len(chunks) * CHUNK
    # Only the dirty extents were read, over the parent's chunks (the 1 MiB write fills its
    # chunk, which is read whole: the same bytes).
    assert inc.disk().bytes_read == sum(n for _, n in v.changed_extents) < len(chunks) * CHUNK
    assert inc.disk().change_detection == "changed-extents"
    assert inc.outcome.checkpoint in dom.checkpoints()
    p.restore_and_compare(inc, tmp_path)
    assert not list((tmp_path / "work").iterdir())  # socket and scratch files are gone
