"""Unit tests of the byte formats and key handling."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import zstandard

from engine import (
    KeyUnavailable,
    WrongKey,
    create_platform_kek,
    kek_fingerprint,
    load_key_file,
    platform_kek,
)
from engine.formats import (
    CHUNK_OVERHEAD,
    PAGE_SIZE,
    ChunkDamaged,
    Codec,
    DeltaRef,
    DiskIndex,
    IndexDamaged,
    ManifestDamaged,
    changed_pages,
    check_outer,
    chunk_id,
    decode_chunk,
    decode_chunk_into,
    delta_body,
    encode_chunk,
    encode_delta,
    manifest_from_bytes,
    manifest_to_bytes,
    recode_chunk,
)
from engine.keys import new_keyset, unwrap_keys, wrap_keys


def test_chunk_round_trip_and_every_byte_is_protected() -> None:
    keys = new_keyset()
    data = b"hello world " * 5000
    cid = chunk_id(keys, data)
    blob = encode_chunk(keys, cid, data, Codec.parse("zstd:3"))
    assert len(blob) < len(data)
    assert decode_chunk(keys, cid, blob, len(data)) == data
    for pos in range(0, len(blob), max(1, len(blob) // 97)):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(ChunkDamaged):
            decode_chunk(keys, cid, bytes(bad))
        assert check_outer(bytes(bad)) is not None


@pytest.mark.parametrize("codec", ["none", "zstd:1"])
def test_decode_into_checks_what_decode_checks(codec: str) -> None:
    keys = new_keyset()
    data = (b"hello world " * 5000)[: 40 << 10] + os.urandom(8 << 10)
    cid = chunk_id(keys, data)
    blob = encode_chunk(keys, cid, data, Codec.parse(codec))
    out = bytearray(64 << 10)
    assert decode_chunk_into(keys, cid, memoryview(blob), len(data), memoryview(out))
    assert out[: len(data)] == data == decode_chunk(keys, cid, blob, len(data))
    for pos in range(0, len(blob), max(1, len(blob) // 97)):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(ChunkDamaged):
            decode_chunk_into(keys, cid, bytes(bad), len(data), memoryview(out))
    with pytest.raises(ChunkDamaged, match="length"):
        decode_chunk_into(keys, cid, blob, len(data) - 1, memoryview(out))
    with pytest.raises(ChunkDamaged, match="authentication"):
        decode_chunk_into(keys, bytes(32), blob, len(data), memoryview(out))
    # Sealed under an id that is not its content's: only the keyed id check finds it.
    wrong = encode_chunk(keys, chunk_id(keys, b"other"), data, Codec.parse(codec))
    with pytest.raises(ChunkDamaged, match="does not match its id"):
        decode_chunk_into(keys, chunk_id(keys, b"other"), wrong, len(data), memoryview(out))


def test_decode_into_leaves_deltas_to_decode() -> None:
    keys = new_keyset()
    base = os.urandom(8 * PAGE_SIZE)
    new = bytearray(base)
    new[PAGE_SIZE : PAGE_SIZE + 10] = b"x" * 10
    cid = chunk_id(keys, bytes(new))
    body = delta_body(bytes(new), changed_pages(base, bytes(new)))
    ref = DeltaRef(chunk_id(keys, base), 1)
    blob = encode_delta(keys, cid, ref, body, len(new), Codec.parse("zstd:1"))
    out = bytearray(len(new))
    assert not decode_chunk_into(keys, cid, blob, len(new), memoryview(out))
    assert out == bytes(len(new))  # nothing written
    assert decode_chunk(keys, cid, blob, len(new), lambda bid, n: base) == new


def test_incompressible_chunks_are_stored_raw() -> None:
    keys = new_keyset()
    data = os.urandom(1 << 16)
    cid = chunk_id(keys, data)
    blob = encode_chunk(keys, cid, data, Codec.parse("zstd:1"))
    assert len(blob) == len(data) + CHUNK_OVERHEAD
    assert blob[5] == 0  # codec byte: raw
    assert decode_chunk(keys, cid, blob) == data


def test_authentication_binds_chunk_id_and_key() -> None:
    keys, other = new_keyset(), new_keyset()
    data = b"x" * 1000
    cid = chunk_id(keys, data)
    blob = encode_chunk(keys, cid, data, Codec.parse("none"))
    with pytest.raises(ChunkDamaged, match="authentication"):
        decode_chunk(keys, bytes(32), blob)
    with pytest.raises(ChunkDamaged, match="authentication"):
        decode_chunk(other, cid, blob)
    assert chunk_id(keys, data) != chunk_id(other, data)


def test_recode_changes_codec_but_not_id() -> None:
    keys = new_keyset()
    data = b"abc" * 10000
    cid = chunk_id(keys, data)
    raw = encode_chunk(keys, cid, data, Codec.parse("none"))
    packed = recode_chunk(keys, cid, raw, Codec.parse("zstd:3"))
    assert len(packed) < len(raw)
    assert decode_chunk(keys, cid, packed) == data
    assert recode_chunk(keys, cid, packed, Codec.parse("zstd:1")) == packed


def test_codec_parse() -> None:
    assert str(Codec.parse("zstd:3")) == "zstd:3"
    assert str(Codec.parse("none")) == "none"
    with pytest.raises(ValueError):
        Codec.parse("lz4")


def test_index_round_trip_and_damage() -> None:
    digests = bytes(range(32)) * 3 + bytes(32)
    idx = DiskIndex(1 << 20, 3 * (1 << 20) + 5, digests)
    data = idx.to_bytes()
    back = DiskIndex.from_bytes(data)
    assert back.count == 4 and back.chunk_len(3) == 5 and back.digest(3) == bytes(32)
    bad = bytearray(data)
    bad[50] ^= 1
    with pytest.raises(IndexDamaged):
        DiskIndex.from_bytes(bytes(bad))


def test_manifest_mac_and_checksum() -> None:
    keys = new_keyset()
    body = {"rp_id": "x", "labels": {"é": "ü"}, "n": 3}
    data = manifest_to_bytes(body, keys)
    assert manifest_from_bytes(data, keys) == body
    assert manifest_from_bytes(data, None) == body
    with pytest.raises(ManifestDamaged, match="authentication"):
        manifest_from_bytes(data, new_keyset())
    tampered = data.replace(b'"n": 3', b'"n": 4')
    with pytest.raises(ManifestDamaged):
        manifest_from_bytes(tampered, None)


def test_key_wrapping(tmp_path: Path) -> None:
    keys = new_keyset()
    kek = os.urandom(32)
    doc = wrap_keys(keys, kek)
    assert unwrap_keys(doc, kek) == keys
    with pytest.raises(WrongKey):
        unwrap_keys(doc, os.urandom(32))
    with pytest.raises(KeyUnavailable):
        unwrap_keys(b"{not json", kek)
    assert keys.dek.hex() not in doc.decode() and repr(keys).count(keys.dek.hex()) == 0


def test_key_file_formats(tmp_path: Path) -> None:
    key = os.urandom(32)
    for name, content in [
        ("raw", key),
        ("hex", key.hex().encode() + b"\n"),
        ("b64", base64.b64encode(key) + b"\n"),
    ]:
        p = tmp_path / name
        p.write_bytes(content)
        assert load_key_file(p) == key
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(KeyUnavailable):
        load_key_file(tmp_path / "short")
    with pytest.raises(KeyUnavailable):
        load_key_file(tmp_path / "missing")


def test_platform_kek_is_created_only_explicitly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sub" / "master.key"
    monkeypatch.setenv("LIFEBOAT_MASTER_KEY_FILE", str(path))
    with pytest.raises(KeyUnavailable, match="master key file .* is missing"):
        platform_kek()
    assert not path.exists()  # loading never creates it
    k1 = create_platform_kek()
    assert len(k1) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert platform_kek() == k1 == platform_kek(path)
    with pytest.raises(FileExistsError):
        create_platform_kek(path)  # an existing key is never replaced
    assert platform_kek(path) == k1
    path.unlink()
    with pytest.raises(KeyUnavailable, match="missing"):
        platform_kek()
    assert not path.exists()
    monkeypatch.delenv("LIFEBOAT_MASTER_KEY_FILE")
    with pytest.raises(KeyUnavailable):
        platform_kek()


def test_a_wrong_key_is_named_by_its_fingerprint() -> None:
    keys, kek, other = new_keyset(), os.urandom(32), os.urandom(32)
    doc = wrap_keys(keys, kek)
    with pytest.raises(WrongKey) as e:
        unwrap_keys(doc, other)
    assert str(e.value) == (
        f"key fingerprint {kek_fingerprint(other)} does not match the store's "
        f"{kek_fingerprint(kek)}"
    )


def test_keys_files_without_a_fingerprint_are_still_read() -> None:
    keys, kek = new_keyset(), os.urandom(32)
    legacy = json.loads(wrap_keys(keys, kek))
    del legacy["kek_fingerprint"]
    doc = json.dumps(legacy).encode()
    assert unwrap_keys(doc, kek) == keys
    with pytest.raises(WrongKey, match="does not unwrap this store's keys"):
        unwrap_keys(doc, os.urandom(32))


def test_the_fingerprint_never_refuses_a_key_that_opens_the_store() -> None:
    keys, kek = new_keyset(), os.urandom(32)
    doc = json.loads(wrap_keys(keys, kek))
    doc["kek_fingerprint"] = "0" * 16  # not authenticated: only explains failures
    assert unwrap_keys(json.dumps(doc).encode(), kek) == keys
    damaged = json.loads(wrap_keys(keys, kek))
    blob = bytearray(base64.b64decode(damaged["wrapped"]))
    blob[20] ^= 1
    damaged["wrapped"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(KeyUnavailable, match="damaged") as e:
        unwrap_keys(json.dumps(damaged).encode(), kek)
    assert not isinstance(e.value, WrongKey)


def test_decompress_into_fills_exactly_or_names_the_damage() -> None:
    from engine.formats import _decompress_into

    data = b"lifeboat " * 20000
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(data)
    out = bytearray(len(data))
    _decompress_into(memoryview(frame), memoryview(out))
    assert out == data
    with pytest.raises(ChunkDamaged, match="length"):
        _decompress_into(memoryview(frame[:-9]), memoryview(out))  # truncated frame
    with pytest.raises(ChunkDamaged, match="more than the expected"):
        _decompress_into(memoryview(frame), memoryview(out)[:-1])
    with pytest.raises(ChunkDamaged, match="length"):
        _decompress_into(memoryview(frame), memoryview(bytearray(len(data) + 1)))


def test_changed_pages_agrees_with_a_page_by_page_comparison() -> None:
    import random

    rnd = random.Random(7)
    for length in (1, 4095, 4096, 4097, 65536, 65536 + 100, (1 << 20) - 3, 1 << 20):
        base = rnd.randbytes(length)
        for _ in range(20):
            new = bytearray(base)
            for _ in range(rnd.randrange(0, 12)):
                at = rnd.randrange(length)
                new[at] ^= 1 + rnd.randrange(255)
            pages = (length + 4095) // 4096
            naive = [
                p
                for p in range(pages)
                if base[p * 4096 : (p + 1) * 4096] != new[p * 4096 : (p + 1) * 4096]
            ]
            assert changed_pages(base, bytes(new)) == naive
            limit = rnd.randrange(0, 4)
            assert changed_pages(base, bytes(new), limit) == (
                naive if len(naive) <= limit else None
            )
