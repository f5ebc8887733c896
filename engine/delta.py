"""When a changed chunk is stored as a delta on its parent's chunk, and how (FORMAT.md,
"Delta chunks"). The chunk keeps its id, so indexes and dedup do not change; only what is
stored under the id is smaller."""

from __future__ import annotations

from dataclasses import dataclass

from .formats import (
    PAGE_SIZE,
    ZERO_DIGEST,
    ChunkDamaged,
    DeltaRef,
    changed_pages,
    delta_body,
    delta_ref,
    encode_chunk,
    encode_delta,
)
from .keys import KeySet
from .store import Store

# A changed chunk becomes a delta when at most this share of its pages changed. Measured by
# bench/scatter.py (bench/README.md, "Delta threshold"): above a quarter the delta saves
# little and every restore of the chunk pays for reading its base too.
DELTA_THRESHOLD = 0.25
# The longest chain written: a delta's base is a whole chunk or a delta of depth < DELTA_DEPTH.
# A parent chunk at that depth is not built on; the new delta is taken against the chain's
# whole chunk instead. Measured by bench/scatter.py (bench/README.md, "Chain bound").
DELTA_DEPTH = 4


@dataclass(frozen=True)
class Encoded:
    """A chunk framed for the store: whole or as a delta (then `saved` plaintext bytes)."""

    blob: bytes
    delta: bool
    saved: int


class DeltaMaker:
    """Frames the changed chunks of a backup, as deltas on the parent's chunks when that pays.
    Backups go to the snapshot tier, a local directory, where reading the parent's chunk costs
    a local read; a backup straight into an object store (the CLI) pays a GET per changed
    chunk for it. A parent chunk that cannot be read is never built on (stored whole)."""

    def __init__(
        self,
        store: Store,
        keys: KeySet,
        threshold: float | None = None,
        depth: int | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        # Read at each backup, not bound at import, so a benchmark can vary them.
        self.threshold = DELTA_THRESHOLD if threshold is None else threshold
        self.depth = DELTA_DEPTH if depth is None else depth
        self.enabled = store.deltas and self.depth > 0 and self.threshold > 0

    def encode(
        self,
        cid: bytes,
        data: bytes,
        parent: bytes | None,
        parent_read: tuple[bytes, bytes] | None = None,
    ) -> Encoded:
        """`parent_read`: the parent chunk's stored bytes and plaintext when the caller has
        read (and checked) them already."""
        if self.enabled and parent is not None and parent != ZERO_DIGEST:
            made = self._delta(cid, data, parent, parent_read)
            if made is not None:
                return made
        return Encoded(encode_chunk(self.keys, cid, data, self.store.codec), False, 0)

    def _delta(
        self, cid: bytes, data: bytes, parent: bytes, parent_read: tuple[bytes, bytes] | None
    ) -> Encoded | None:
        try:
            base, depth, plain = self._base(parent, len(data), parent_read)
        except (FileNotFoundError, OSError, ChunkDamaged):
            return None
        if len(plain) != len(data):
            return None
        count = (len(data) + PAGE_SIZE - 1) // PAGE_SIZE
        pages = changed_pages(plain, data, int(self.threshold * count))
        if pages is None:
            return None
        body = delta_body(data, pages)
        blob = encode_delta(
            self.keys, cid, DeltaRef(base, depth + 1), body, len(data), self.store.codec
        )
        return Encoded(blob, True, max(0, len(data) - len(blob)))

    def _base(
        self, parent: bytes, length: int, parent_read: tuple[bytes, bytes] | None = None
    ) -> tuple[bytes, int, bytes]:
        """(base id, its depth, its plaintext): the parent's chunk, or, when that is already
        at the bound, the whole chunk its chain starts from."""
        blob = self.store.get_chunk(parent) if parent_read is None else parent_read[0]
        ref = delta_ref(blob)
        if ref is None or ref.depth < self.depth:
            depth = ref.depth if ref is not None else 0
            if parent_read is not None:
                return parent, depth, parent_read[1]
            return parent, depth, self.store.read_chunk(parent, length, blob, check_id=False)
        root = ref.base
        for _ in range(ref.depth):
            rblob = self.store.get_chunk(root)
            rref = delta_ref(rblob)
            if rref is None:
                return root, 0, self.store.read_chunk(root, length, rblob, check_id=False)
            root = rref.base
        raise ChunkDamaged("delta chain deeper than its header says")
