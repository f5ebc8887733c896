"""Byte formats: stored chunks, per-disk indexes and manifests (see FORMAT.md)."""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keys import KeySet

DIGEST_LEN = 32
ZERO_DIGEST = bytes(DIGEST_LEN)

# ---------------------------------------------------------------------------- codecs

CODEC_NONE = 0
CODEC_ZSTD = 1


@dataclass(frozen=True)
class Codec:
    """A store's compression setting: "none" or "zstd:<level>"."""

    name: str
    level: int

    @classmethod
    def parse(cls, spec: str) -> Codec:
        spec = spec.strip().lower()
        if spec in ("none", "raw"):
            return cls("none", 0)
        if spec == "zstd":
            return cls("zstd", 1)
        if spec.startswith("zstd:"):
            try:
                level = int(spec[5:])
            except ValueError:
                level = 0
            if 1 <= level <= 19 or -7 <= level <= -1:
                return cls("zstd", level)
        raise ValueError(f"unknown codec {spec!r} (use 'none' or 'zstd:<level>', level 1..19)")

    def __str__(self) -> str:
        return "none" if self.name == "none" else f"zstd:{self.level}"


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def _aead(key: bytes) -> AESGCM:
    cache: dict[bytes, AESGCM] | None = getattr(_local, "aead", None)
    if cache is None:
        cache = _local.aead = {}
    a = cache.get(key)
    if a is None:
        a = cache[key] = AESGCM(key)
    return a


# ---------------------------------------------------------------------------- chunks

CHUNK_MAGIC = b"LBCK"
CHUNK_VERSION = 1  # a whole chunk (unchanged since format 1)
DELTA_VERSION = 2  # a delta chunk: changed pages on a base chunk (format 2)
CHUNK_HEADER = struct.Struct("<4sBBHI")  # magic, version, codec, flags, plaintext length
# A delta's clear header after CHUNK_HEADER: the base's id, the delta's depth in its chain (1: on
# a whole chunk) and log2 of the page size. In the clear so GC and a keyless scrub can follow
# chains; authenticated as associated data.
DELTA_HEADER = struct.Struct("<32sBB2x")
NONCE_LEN = 12
TAG_LEN = 16
OUTER_LEN = 32
CHUNK_OVERHEAD = CHUNK_HEADER.size + NONCE_LEN + TAG_LEN + OUTER_LEN
DELTA_OVERHEAD = CHUNK_OVERHEAD + DELTA_HEADER.size
FLAG_DELTA = 1
PAGE_SIZE = 4096
PAGE_SHIFT = 12


class ChunkDamaged(Exception):
    """Internal: a stored chunk failed a check; the message says which."""


def chunk_id(keys: KeySet, data: bytes | memoryview) -> bytes:
    return blake3.blake3(data, key=keys.id_key).digest()


_ZEROS: dict[int, bytes] = {}


def zeros(n: int) -> bytes:
    z = _ZEROS.get(n)
    if z is None:
        z = bytes(n)
        if len(_ZEROS) < 8:
            _ZEROS[n] = z
    return z


def is_zero(data: bytes) -> bool:
    return data == zeros(len(data))


def _seal(keys: KeySet, cid: bytes, header: bytes, data: bytes, codec: Codec) -> bytes:
    """Compress `data` (if smaller), encrypt it with `header` || id as associated data, frame
    it. The codec byte of `header` (offset 5) is set here."""
    payload: bytes = data
    codec_id = CODEC_NONE
    if codec.name == "zstd":
        packed = _compressor(codec.level).compress(data)
        if len(packed) < len(data):
            payload, codec_id = packed, CODEC_ZSTD
    head = header[:5] + bytes([codec_id]) + header[6:]
    nonce = os.urandom(NONCE_LEN)
    sealed = _aead(keys.dek).encrypt(nonce, payload, head + cid)
    body = head + nonce + sealed
    return body + blake3.blake3(body).digest()


def encode_chunk(keys: KeySet, cid: bytes, data: bytes, codec: Codec) -> bytes:
    """Compress (if smaller), encrypt and frame one whole chunk."""
    header = CHUNK_HEADER.pack(CHUNK_MAGIC, CHUNK_VERSION, 0, 0, len(data))
    return _seal(keys, cid, header, data, codec)


# ---------------------------------------------------------------------------- delta chunks


@dataclass(frozen=True)
class DeltaRef:
    """What a delta chunk's clear header says: its base chunk and its depth in the chain."""

    base: bytes
    depth: int


@overload
def changed_pages(base: bytes, new: bytes) -> list[int]: ...
@overload
def changed_pages(base: bytes, new: bytes, limit: int) -> list[int] | None: ...
def changed_pages(base: bytes, new: bytes, limit: int | None = None) -> list[int] | None:
    """The numbers of the PAGE_SIZE pages where `new` differs from `base` (equal lengths);
    None as soon as more than `limit` differ (a rewritten chunk is not compared to the end)."""
    if len(base) != len(new):
        raise ValueError("a delta needs a base of the same length")
    # bytes.startswith compares in place (memcmp) with a view of the base as the prefix; a
    # memoryview's own == goes item by item, 30 times slower, and was half the CPU of an
    # incremental of scattered writes. Whole blocks first: most of a chunk is unchanged.
    b, n = memoryview(base), new
    out: list[int] = []
    for block in range(0, len(n), _COMPARE_BLOCK):
        if n.startswith(b[block : block + _COMPARE_BLOCK], block):
            continue
        for off in range(block, min(block + _COMPARE_BLOCK, len(n)), PAGE_SIZE):
            if not n.startswith(b[off : off + PAGE_SIZE], off):
                out.append(off // PAGE_SIZE)
                if limit is not None and len(out) > limit:
                    return None
    return out


_COMPARE_BLOCK = 16 * PAGE_SIZE


def delta_body(new: bytes, pages: list[int]) -> bytes:
    """The plaintext of a delta: a bitmap of the changed pages, then those pages of `new`."""
    count = (len(new) + PAGE_SIZE - 1) // PAGE_SIZE
    bitmap = bytearray((count + 7) // 8)
    parts: list[bytes | memoryview] = [b""]
    view = memoryview(new)
    for p in pages:
        bitmap[p >> 3] |= 1 << (p & 7)
        parts.append(view[p * PAGE_SIZE : (p + 1) * PAGE_SIZE])
    parts[0] = bytes(bitmap)
    return b"".join(parts)


def apply_delta(base: bytes, body: bytes, length: int) -> bytes:
    """Rebuild a chunk of `length` bytes from its base and a delta body; ChunkDamaged when the
    body does not fit (a body that fits but is wrong fails the id check instead)."""
    if len(base) != length:
        raise ChunkDamaged(f"delta base has {len(base)} bytes, the chunk {length}")
    count = (length + PAGE_SIZE - 1) // PAGE_SIZE
    nmap = (count + 7) // 8
    if len(body) < nmap:
        raise ChunkDamaged("delta body is truncated")
    out = bytearray(base)
    at = nmap
    for p in range(count):
        if body[p >> 3] >> (p & 7) & 1:
            start = p * PAGE_SIZE
            end = min(start + PAGE_SIZE, length)
            if at + end - start > len(body):
                raise ChunkDamaged("delta body is truncated")
            out[start:end] = body[at : at + end - start]
            at += end - start
    if at != len(body):
        raise ChunkDamaged("delta body has trailing bytes")
    return bytes(out)


def encode_delta(
    keys: KeySet, cid: bytes, ref: DeltaRef, body: bytes, length: int, codec: Codec
) -> bytes:
    """Compress (if smaller), encrypt and frame a delta chunk of a `length`-byte chunk."""
    header = CHUNK_HEADER.pack(CHUNK_MAGIC, DELTA_VERSION, 0, FLAG_DELTA, length)
    header += DELTA_HEADER.pack(ref.base, ref.depth, PAGE_SHIFT)
    return _seal(keys, cid, header, body, codec)


def _header_len(version: int) -> int:
    return CHUNK_HEADER.size + (DELTA_HEADER.size if version == DELTA_VERSION else 0)


def check_outer(blob: bytes) -> str | None:
    """Keyless check: framing and outer BLAKE3 checksum. Returns a reason, or None if fine."""
    if len(blob) < CHUNK_OVERHEAD:
        return f"truncated ({len(blob)} bytes)"
    if blake3.blake3(memoryview(blob)[:-OUTER_LEN]).digest() != blob[-OUTER_LEN:]:
        return "outer checksum mismatch"
    magic, version, codec_id, flags, _n = CHUNK_HEADER.unpack_from(blob)
    if magic != CHUNK_MAGIC or codec_id not in (0, 1):
        return "bad header"
    if version == CHUNK_VERSION and flags == 0:
        return None
    if version != DELTA_VERSION or flags != FLAG_DELTA:
        return "bad header"
    if len(blob) < DELTA_OVERHEAD:
        return f"truncated ({len(blob)} bytes)"
    _base, depth, shift = DELTA_HEADER.unpack_from(blob, CHUNK_HEADER.size)
    if depth < 1 or shift != PAGE_SHIFT:
        return "bad delta header"
    return None


def delta_ref(blob: bytes) -> DeltaRef | None:
    """The base and depth of a delta chunk, None for a whole chunk (clear header only: call
    check_outer or decode_chunk to trust it)."""
    if len(blob) < DELTA_OVERHEAD or blob[4] != DELTA_VERSION:
        return None
    base, depth, _shift = DELTA_HEADER.unpack_from(blob, CHUNK_HEADER.size)
    return DeltaRef(bytes(base), int(depth))


BaseReader = Callable[[bytes, int], bytes]


def open_chunk(keys: KeySet, cid: bytes, blob: bytes) -> tuple[bytes, DeltaRef | None, int]:
    """Check, decrypt and decompress one stored chunk, without rebuilding a delta: returns
    (plaintext or delta body, the delta's base or None, the chunk's plaintext length)."""
    reason = check_outer(blob)
    if reason:
        raise ChunkDamaged(reason)
    _magic, version, codec_id, _flags, plain_len = CHUNK_HEADER.unpack_from(blob)
    hs = _header_len(version)
    ref = delta_ref(blob) if version == DELTA_VERSION else None
    # Views, not slices: slicing the ciphertext out of the blob would copy the whole chunk.
    view = memoryview(blob)
    try:
        payload = _aead(keys.dek).decrypt(
            view[hs : hs + NONCE_LEN], view[hs + NONCE_LEN : -OUTER_LEN], blob[:hs] + cid
        )
    except InvalidTag as e:
        raise ChunkDamaged("authentication failed (wrong key, wrong id or tampering)") from e
    # A delta body is at most a bitmap plus the whole chunk.
    limit = plain_len if ref is None else plain_len + plain_len // (8 * PAGE_SIZE) + 1
    if codec_id == CODEC_ZSTD:
        try:
            data = _decompressor().decompress(payload, max_output_size=limit)
        except zstandard.ZstdError as e:
            raise ChunkDamaged(f"decompression failed: {e}") from e
    else:
        data = payload
    return data, ref, plain_len


def decode_chunk(
    keys: KeySet,
    cid: bytes,
    blob: bytes,
    expected_len: int | None = None,
    base: BaseReader | None = None,
    *,
    check_id: bool = True,
) -> bytes:
    """Check, decrypt, decompress and re-derive the id of one stored chunk. A delta is rebuilt
    on its base, read by `base(base id, length)`; without `base` a delta is refused.
    `check_id=False` skips the last step only (a base inside a chain: the id of the chunk
    rebuilt on it is checked, which a wrong base fails)."""
    data, ref, plain_len = open_chunk(keys, cid, blob)
    if expected_len is not None and plain_len != expected_len:
        raise ChunkDamaged(f"length {plain_len} != expected {expected_len}")
    if ref is not None:
        if base is None:
            raise ChunkDamaged("a delta chunk read without its base")
        data = apply_delta(base(ref.base, plain_len), data, plain_len)
    if len(data) != plain_len:
        raise ChunkDamaged(f"length {len(data)} != expected {expected_len or plain_len}")
    if check_id and chunk_id(keys, data) != cid:
        raise ChunkDamaged("content does not match its id")
    return data


def decode_chunk_into(
    keys: KeySet, cid: bytes, blob: bytes | memoryview, expected_len: int, out: memoryview
) -> bool:
    """decode_chunk of a whole chunk with its plaintext written into out[:expected_len], every
    check the same (outer checksum, AES-GCM, length, keyed id). Uncompressed, it is decrypted
    straight into `out`; compressed, into this thread's scratch buffer and decompressed from
    there: no copy of the ciphertext, and no fresh zeroed buffer per chunk. Returns False,
    writing nothing, for a delta chunk (decode_chunk rebuilds it on its base). On ChunkDamaged,
    `out` holds whatever the failed step left: never use it then."""
    reason = check_outer(blob)
    if reason:
        raise ChunkDamaged(reason)
    _magic, version, codec_id, _flags, plain_len = CHUNK_HEADER.unpack_from(blob)
    if version == DELTA_VERSION:
        return False
    if plain_len != expected_len:
        raise ChunkDamaged(f"length {plain_len} != expected {expected_len}")
    hs = CHUNK_HEADER.size
    view = memoryview(blob)
    nonce, sealed = view[hs : hs + NONCE_LEN], view[hs + NONCE_LEN : -OUTER_LEN]
    aad = bytes(view[:hs]) + cid
    target = out[:plain_len]
    if codec_id == CODEC_ZSTD:
        payload = _scratch(len(sealed) - TAG_LEN)
        _decrypt_into(keys, nonce, sealed, aad, payload)
        _decompress_into(payload, target)
    else:
        if len(sealed) - TAG_LEN != plain_len:
            raise ChunkDamaged(f"length {len(sealed) - TAG_LEN} != expected {plain_len}")
        _decrypt_into(keys, nonce, sealed, aad, target)
    if chunk_id(keys, target) != cid:
        raise ChunkDamaged("content does not match its id")
    return True


def _decrypt_into(
    keys: KeySet, nonce: memoryview, sealed: memoryview, aad: bytes, out: memoryview
) -> None:
    try:
        _aead(keys.dek).decrypt_into(nonce, sealed, aad, out)
    except InvalidTag as e:
        raise ChunkDamaged("authentication failed (wrong key, wrong id or tampering)") from e


def _decompress_into(payload: memoryview, out: memoryview) -> None:
    """Decompress one zstd frame into all of `out`, exactly: into `out` itself, not into a new
    bytes object then copied there. A frame shorter or longer than `out` is damage."""
    n = len(out)
    got = 0
    try:
        with _decompressor().stream_reader(payload, read_size=len(payload)) as reader:
            while got < n:
                step = reader.readinto(out[got:])
                if step == 0:
                    break
                got += step
            more = reader.readinto(bytearray(1)) if got == n else 0
    except zstandard.ZstdError as e:
        raise ChunkDamaged(f"decompression failed: {e}") from e
    if more:
        raise ChunkDamaged(f"decompression failed: more than the expected {n} bytes")
    if got != n:
        raise ChunkDamaged(f"length {got} != expected {n}")


def _scratch(n: int) -> memoryview:
    """n bytes of this thread's scratch buffer (kept, like the pipeline's buffers)."""
    buf: bytearray | None = getattr(_local, "scratch", None)
    if buf is None or len(buf) < n:
        buf = _local.scratch = bytearray(max(n, 2 << 20))
    return memoryview(buf)[:n]


def recode_frame(keys: KeySet, cid: bytes, blob: bytes, codec: Codec) -> bytes:
    """A stored chunk (whole or delta, already verified) framed for a store with `codec`:
    the same bytes when the codec family matches, else re-compressed (a delta stays one)."""
    _m, version, codec_id, _f, plain_len = CHUNK_HEADER.unpack_from(blob)
    if (codec_id == CODEC_ZSTD) == (codec.name == "zstd"):
        return blob  # already in the target's codec family: copy as is
    data, ref, _n = open_chunk(keys, cid, blob)
    if ref is None:
        return encode_chunk(keys, cid, data, codec)
    return encode_delta(keys, cid, ref, data, plain_len, codec)


def recode_chunk(keys: KeySet, cid: bytes, blob: bytes, codec: Codec) -> bytes:
    """Verify a stored whole chunk and return it framed for a store with `codec`."""
    decode_chunk(keys, cid, blob)
    return recode_frame(keys, cid, blob, codec)


# ---------------------------------------------------------------------------- indexes

INDEX_MAGIC = b"LBINDEX\x00"
INDEX_VERSION = 1
INDEX_HEADER = struct.Struct("<8sHHBB2xQQ8x")  # magic, version, flags, shift, dlen, size, count


class IndexDamaged(Exception):
    """Internal: an index file failed a check."""


@dataclass
class DiskIndex:
    """Digests of one disk's chunks, in order; an all-zero digest marks a zero chunk."""

    chunk_size: int
    disk_size: int
    digests: bytes | bytearray

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_LEN

    @staticmethod
    def chunks_for(disk_size: int, chunk_size: int) -> int:
        return (disk_size + chunk_size - 1) // chunk_size

    def digest(self, i: int) -> bytes:
        return bytes(self.digests[i * DIGEST_LEN : (i + 1) * DIGEST_LEN])

    def chunk_len(self, i: int) -> int:
        return min(self.chunk_size, self.disk_size - i * self.chunk_size)

    def to_bytes(self) -> bytes:
        shift = self.chunk_size.bit_length() - 1
        if 1 << shift != self.chunk_size:
            raise ValueError("chunk size must be a power of two")
        head = INDEX_HEADER.pack(
            INDEX_MAGIC, INDEX_VERSION, 0, shift, DIGEST_LEN, self.disk_size, self.count
        )
        body = head + bytes(self.digests)
        return body + blake3.blake3(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> DiskIndex:
        if len(data) < INDEX_HEADER.size + DIGEST_LEN:
            raise IndexDamaged("truncated")
        if blake3.blake3(memoryview(data)[:-DIGEST_LEN]).digest() != data[-DIGEST_LEN:]:
            raise IndexDamaged("checksum mismatch")
        magic, version, _flags, shift, dlen, size, count = INDEX_HEADER.unpack_from(data)
        if magic != INDEX_MAGIC or version != INDEX_VERSION or dlen != DIGEST_LEN:
            raise IndexDamaged("bad header")
        digests = data[INDEX_HEADER.size : -DIGEST_LEN]
        if len(digests) != count * DIGEST_LEN or count != cls.chunks_for(size, 1 << shift):
            raise IndexDamaged("length does not match header")
        return cls(1 << shift, size, digests)


def file_digest(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


# ---------------------------------------------------------------------------- manifests

MANIFEST_FORMAT = "lifeboat-manifest"
MANIFEST_VERSION = 1


class ManifestDamaged(Exception):
    """Internal: a manifest failed a check."""


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_to_bytes(body: dict[str, Any], keys: KeySet) -> bytes:
    canon = canonical(body)
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "body": body,
        "blake3": blake3.blake3(canon).hexdigest(),
        "mac": blake3.blake3(canon, key=keys.mac_key).hexdigest(),
    }
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def manifest_from_bytes(data: bytes, keys: KeySet | None) -> dict[str, Any]:
    """Parse a manifest; check its checksum, and its MAC when keys are given."""
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
            raise ManifestDamaged("unknown format")
        body = doc["body"]
        if not isinstance(body, dict):
            raise ManifestDamaged("body is not an object")
        canon = canonical(body)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestDamaged(f"unparsable: {e}") from e
    if blake3.blake3(canon).hexdigest() != doc.get("blake3"):
        raise ManifestDamaged("checksum mismatch")
    if keys is not None and blake3.blake3(canon, key=keys.mac_key).hexdigest() != doc.get("mac"):
        raise ManifestDamaged("authentication failed")
    return body
