"""Key-encryption keys (KEK), the per-vault key set and its wrapped form in a store.

A store holds two random 32-byte keys, wrapped together by a 32-byte KEK with AES-256-GCM:

* the data key (DEK) encrypts chunks with AES-256-GCM;
* the id key keys BLAKE3, so chunk ids reveal nothing without it.

The manifest MAC key is derived from the DEK (BLAKE3 derive-key mode), so it needs no storage.
Rotating the KEK re-wraps the key set; chunks, indexes and manifests are untouched.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KeyUnavailable, WrongKey

KEY_LEN = 32
MASTER_KEY_ENV = "LIFEBOAT_MASTER_KEY_FILE"
KEYS_FORMAT = "lifeboat-keys"
KEYS_VERSION = 1
MAC_CONTEXT = "lifeboat 2025-01 manifest mac v1"
FINGERPRINT_CONTEXT = "lifeboat 2025-01 kek fingerprint v1"


@dataclass(frozen=True)
class KeySet:
    """The unwrapped keys of one vault."""

    vault_key_id: str
    dek: bytes
    id_key: bytes

    @property
    def mac_key(self) -> bytes:
        return blake3.blake3(self.dek, derive_key_context=MAC_CONTEXT).digest()

    def __repr__(self) -> str:  # never print key material
        return f"KeySet(vault_key_id={self.vault_key_id!r})"


def parse_key_bytes(raw: bytes, source: str = "key") -> bytes:
    """Accept 32 raw bytes, or 64 hex digits, or base64 of 32 bytes (surrounding whitespace ok)."""
    if len(raw) == KEY_LEN:
        return bytes(raw)
    text = raw.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_LEN:
        return decoded
    raise KeyUnavailable(
        f"{source}: not a 32-byte key (expected 32 raw bytes, 64 hex digits or base64)"
    )


def load_key_file(path: str | os.PathLike[str]) -> bytes:
    """Load a customer-managed KEK from a file (raw, hex or base64); KeyUnavailable if unusable."""
    return _read_key(Path(path), "key file")


def _read_key(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError as e:
        raise KeyUnavailable(f"{what} {path} is missing") from e
    except OSError as e:
        raise KeyUnavailable(f"{what} {path} unreadable: {e.strerror}") from e
    return parse_key_bytes(raw, source=f"{what} {path}")


def platform_kek(path: str | os.PathLike[str] | None = None) -> bytes:
    """Load the platform master key; KeyUnavailable when its file is missing or unusable.

    The path defaults to $LIFEBOAT_MASTER_KEY_FILE. The key is never created here: a new key
    would not open the stores the lost one wraps, and backups made with it would be lost in
    turn once the original file came back. `create_platform_kek` makes it, once.
    """
    return _read_key(_master_key_path(path), "master key file")


def create_platform_kek(path: str | os.PathLike[str] | None = None) -> bytes:
    """Create the platform master key: 32 random bytes in a new file of mode 0600.

    FileExistsError if the file exists: an existing key is never replaced.
    """
    p = _master_key_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_LEN)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            if os.write(fd, key) != KEY_LEN:
                raise OSError(errno.EIO, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        p.unlink()  # a partial key file would pass for a key that never existed
        raise
    _fsync_dir(p.parent)
    return key


def _master_key_path(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get(MASTER_KEY_ENV)
    if not env:
        raise KeyUnavailable(f"no master key file: ${MASTER_KEY_ENV} is not set")
    return Path(env)


def kek_fingerprint(kek: bytes) -> str:
    """Short public fingerprint of a KEK, stored next to the wrapped keys: it names the key a
    store needs, so a wrong key is reported as such (it reveals nothing of the key)."""
    return blake3.blake3(kek, derive_key_context=FINGERPRINT_CONTEXT).hexdigest()[:16]


def _check_kek(kek: bytes) -> bytes:
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEY_LEN:
        raise KeyUnavailable("a key-encryption key must be exactly 32 bytes")
    return bytes(kek)


def _aad(vault_key_id: str) -> bytes:
    return f"{KEYS_FORMAT}:{KEYS_VERSION}:{vault_key_id}".encode()


def new_keyset() -> KeySet:
    return KeySet(str(uuid.uuid4()), os.urandom(KEY_LEN), os.urandom(KEY_LEN))


def wrap_keys(keys: KeySet, kek: bytes) -> bytes:
    """Serialise a key set wrapped by kek: the bytes of keys.json."""
    kek = _check_kek(kek)
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, keys.dek + keys.id_key, _aad(keys.vault_key_id))
    doc = {
        "format": KEYS_FORMAT,
        "version": KEYS_VERSION,
        "vault_key_id": keys.vault_key_id,
        "wrap": "aes-256-gcm",
        "kek_fingerprint": kek_fingerprint(kek),
        "wrapped": base64.b64encode(nonce + sealed).decode(),
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def vault_key_id_of(doc_bytes: bytes) -> str:
    try:
        return str(json.loads(doc_bytes)["vault_key_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise KeyUnavailable(f"keys file unreadable: {e}") from e


def unwrap_keys(doc_bytes: bytes, kek: bytes) -> KeySet:
    """Unwrap keys.json bytes; WrongKey if kek does not open them."""
    kek = _check_kek(kek)
    try:
        doc = json.loads(doc_bytes)
        if doc.get("format") != KEYS_FORMAT or doc.get("version") != KEYS_VERSION:
            raise KeyUnavailable("keys file has an unknown format")
        vault_key_id = str(doc["vault_key_id"])
        blob = base64.b64decode(doc["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise KeyUnavailable(f"keys file unreadable: {e}") from e
    try:
        plain = AESGCM(kek).decrypt(blob[:12], blob[12:], _aad(vault_key_id))
    except InvalidTag as e:
        raise _unwrap_failure(kek_fingerprint(kek), doc.get("kek_fingerprint")) from e
    if len(plain) != 2 * KEY_LEN:
        raise KeyUnavailable("keys file holds keys of the wrong size")
    return KeySet(vault_key_id, plain[:KEY_LEN], plain[KEY_LEN:])


def _unwrap_failure(have: str, want: object) -> KeyUnavailable:
    """Name the cause: another key (fingerprints differ) or a damaged keys file (they match).

    The fingerprint is not authenticated, so it only explains a failure; it never refuses a
    key that opens the store. Stores whose keys file records none are read all the same.
    """
    if want is None:
        return WrongKey(f"key fingerprint {have} does not unwrap this store's keys")
    if want != have:
        return WrongKey(f"key fingerprint {have} does not match the store's {want}")
    return KeyUnavailable(
        f"the store's keys file does not authenticate with its key (fingerprint {have}): "
        "the file is damaged"
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse directory fsync
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
