"""The ransomware signal: a backup whose changes look like encryption by malware.

For every disk of a backup the engine reports (`engine.DiskStats`, `engine.entropy`):

- **changed**: the share of the disk's chunks whose digest differs from the parent's;
- **incompressible**: the share of the new chunks' bytes that zstd-1 could not compress away
  (bytes left after compression / new bytes); encrypted data does not compress;
- **entropy**: the mean entropy of new chunks' sampled windows, bits per byte (8 = random).

A disk is judged against the same disk in the VM's own last HISTORY incremental backups (full
backups are not a VM's usual change; RPs without figures are skipped), once at least
MIN_HISTORY of them exist. With `med`/`spread` the median and the scaled median absolute
deviation (1.4826 x MAD, the robust standard deviation) of the history, the disk is suspicious
when **both** hold:

1. the change jumped: changed >= med + max(SPREAD_FACTOR x spread, CHANGE_JUMP_MIN);
2. the new data looks encrypted: incompressible >= ENCRYPTED_SHARE with the entropy at
   ENCRYPTED_ENTROPY or jumped (>= med + max(SPREAD_FACTOR x spread, ENTROPY_JUMP_MIN)); or
   incompressible jumped too (>= med + max(SPREAD_FACTOR x spread, INCOMPRESSIBLE_JUMP_MIN)).
   The first form catches VMs whose usual churn is largely incompressible already (media,
   archives; the demo lab's churn is random bytes), the second VMs whose churn compresses.

A suspicious RP is marked `anomaly = suspicious` with the figures and reasons in `signal`;
`security.alerts` raises one Sev-1 alert per item while it is open (from `job_finished`), and
the restore form points to the last RP before the first suspicious one (`last_clean_before`).
The thresholds and the measured false-positive rate are in the README ("Restore drills and
the ransomware signal").
"""

import statistics
from collections.abc import Iterable
from typing import Any

import engine
from vaults.models import Anomaly, ProtectedVM, RecoveryPoint, RecoveryPointQuerySet

HISTORY = 14
MIN_HISTORY = 5
SPREAD_FACTOR = 4.0
CHANGE_JUMP_MIN = 0.10
INCOMPRESSIBLE_JUMP_MIN = 0.30
ENCRYPTED_SHARE = 0.70
ENCRYPTED_ENTROPY = 6.0
ENTROPY_JUMP_MIN = 1.0
# The median absolute deviation times this estimates a standard deviation.
_MAD_SCALE = 1.4826


def figures(stats: engine.DiskStats) -> dict[str, Any]:
    """One disk's signal figures from the engine's statistics."""
    return {
        "lun": stats.lun,
        "changed": round(stats.chunks_changed / stats.chunks_total, 4) if stats.chunks_total else 0,
        "incompressible": (
            round(stats.bytes_new_incompressible / stats.bytes_new, 4) if stats.bytes_new else 0
        ),
        "entropy": stats.entropy,
        "bytes_new": stats.bytes_new,
    }


def _baseline(values: list[float]) -> tuple[float, float]:
    med = statistics.median(values)
    spread = _MAD_SCALE * statistics.median(abs(v - med) for v in values)
    return med, spread


def _history(item: ProtectedVM) -> list[dict[str, Any]]:
    """The signals of the item's last HISTORY incremental backups that carry figures."""
    signals = (
        RecoveryPoint.objects.filter(protected_item=item)
        .exclude(signal={})
        .order_by(*RecoveryPointQuerySet.LATEST_FIRST)
        .values_list("signal", flat=True)
    )
    out = []
    for signal in signals.iterator():
        if signal.get("full") or not signal.get("disks"):
            continue
        out.append(signal)
        if len(out) == HISTORY:
            break
    return out


def _judge_disk(disk: dict[str, Any], past: list[dict[str, Any]]) -> str | None:
    """Why this disk is suspicious against its past figures, or None."""
    med_c, spread_c = _baseline([p["changed"] for p in past])
    med_i, spread_i = _baseline([p["incompressible"] for p in past])
    changed, flat, bits = disk["changed"], disk["incompressible"], disk["entropy"]
    change_limit = med_c + max(SPREAD_FACTOR * spread_c, CHANGE_JUMP_MIN)
    if changed < change_limit:
        return None
    random_like = bits is None or bits >= ENCRYPTED_ENTROPY
    past_bits = [p["entropy"] for p in past if p.get("entropy") is not None]
    if bits is not None and past_bits:
        med_e, spread_e = _baseline(past_bits)
        random_like = random_like or bits >= med_e + max(SPREAD_FACTOR * spread_e, ENTROPY_JUMP_MIN)
    looks_encrypted = flat >= ENCRYPTED_SHARE and random_like
    flat_jump = flat >= med_i + max(SPREAD_FACTOR * spread_i, INCOMPRESSIBLE_JUMP_MIN)
    if not (looks_encrypted or flat_jump):
        return None
    entropy = f", sampled entropy {bits:.2f} bits/byte" if bits is not None else ""
    return (
        f"LUN {disk['lun']}: {changed:.0%} of chunks changed (usually {med_c:.0%} ± "
        f"{spread_c:.0%}); {flat:.0%} of new bytes did not compress (usually {med_i:.0%})"
        f"{entropy}"
    )


def judge(
    item: ProtectedVM, disks: Iterable[engine.DiskStats], *, full: bool
) -> tuple[str, dict[str, Any]]:
    """(anomaly, signal) of a new backup of `item` from its disks' statistics; `full`: a
    backup without a parent (recorded, never judged)."""
    now = [figures(d) for d in disks]
    return judge_figures(now, [] if full else _history(item), full=full)


def judge_figures(
    now: list[dict[str, Any]], history: list[dict[str, Any]], *, full: bool = False
) -> tuple[str, dict[str, Any]]:
    """`judge` on figures: this backup's disks against the signals of earlier incrementals,
    newest first (benchmarks replay histories through it)."""
    signal: dict[str, Any] = {"disks": now, "full": full, "reasons": [], "history": 0}
    if full:
        return Anomaly.NONE, signal
    history = [h for h in history if not h.get("full") and h.get("disks")][:HISTORY]
    signal["history"] = len(history)
    if len(history) < MIN_HISTORY:
        return Anomaly.NONE, signal
    for disk in now:
        past = [d for h in history for d in h["disks"] if d["lun"] == disk["lun"]]
        if len(past) < MIN_HISTORY:
            continue
        reason = _judge_disk(disk, past)
        if reason:
            signal["reasons"].append(reason)
    return (Anomaly.SUSPICIOUS if signal["reasons"] else Anomaly.NONE), signal


def last_clean_before(item: ProtectedVM) -> RecoveryPoint | None:
    """The last live RP before the item's first suspicious one since its last clean RP:
    where a restore after an attack should start. None when no RP is suspicious."""
    live = RecoveryPoint.objects.live().filter(protected_item=item)
    newest_suspicious = live.filter(anomaly=Anomaly.SUSPICIOUS).order_by("-time").first()
    if newest_suspicious is None:
        return None
    # Back from the newest suspicious RP, over the run of suspicious ones before it.
    for rp in live.filter(time__lt=newest_suspicious.time).order_by("-time"):
        if rp.anomaly != Anomaly.SUSPICIOUS:
            return rp
    return None
