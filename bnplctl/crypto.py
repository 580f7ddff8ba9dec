"""The secret key and what is derived from it: passport encryption (AES-GCM, bound to
the row's user id), the passport blind index and card fingerprints (HMAC), the key check
the database keeps, and the key file (read, written, generated).

Nothing here ever puts key material into an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from bnplctl.errors import ConfigError

KEY_BYTES = 32
_ENCRYPTION_VERSION = b"\x01"


class Keyring:
    """Keys derived from one secret: AES-GCM for passports, HMAC for blind indexes."""

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise ConfigError(f"secret key must be {KEY_BYTES} bytes")
        self._encryption_key = self._derive(master, b"bnplctl/passport-encryption/v1")
        self._passport_index_key = self._derive(master, b"bnplctl/passport-blind-index/v1")
        self._card_key = self._derive(master, b"bnplctl/card-fingerprint/v1")
        self._key_check = self._derive(master, b"bnplctl/key-check/v1").hex()
        self._cipher: Any = None
        # Keyed once; each digest starts from a copy (half the cost of a fresh HMAC).
        self._passport_mac = hmac.new(self._passport_index_key, digestmod=hashlib.sha256)
        self._card_mac = hmac.new(self._card_key, digestmod=hashlib.sha256)

    def key_check(self) -> str:
        """What the database keeps of the key: a keyed HMAC of a fixed label (one-way: it
        tells whether a key is the same, and nothing about it)."""
        return self._key_check

    @staticmethod
    def _derive(master: bytes, label: bytes) -> bytes:
        return hmac.digest(master, label, hashlib.sha256)

    def passport_index(self, passport: str) -> str:
        mac = self._passport_mac.copy()
        mac.update(passport.encode())
        return mac.hexdigest()

    def card_fingerprint(self, digits: str) -> str:
        mac = self._card_mac.copy()
        mac.update(digits.encode())
        return mac.hexdigest()

    def _aead(self) -> Any:
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._encryption_key)
        return self._cipher

    def encrypt_passport(self, passport: str, user_id: str) -> bytes:
        """AES-GCM with a random nonce; the user id is bound in as associated data."""
        nonce = os.urandom(12)
        sealed: bytes = self._aead().encrypt(nonce, passport.encode(), user_id.encode())
        return _ENCRYPTION_VERSION + nonce + sealed

    def decrypt_passport(self, blob: bytes, user_id: str) -> str:
        from cryptography.exceptions import InvalidTag

        if blob[:1] != _ENCRYPTION_VERSION:
            raise ConfigError("passport ciphertext has an unknown format")
        try:
            plain: bytes = self._aead().decrypt(blob[1:13], blob[13:], user_id.encode())
        except InvalidTag:
            raise ConfigError("passport cannot be decrypted with this secret key") from None
        return plain.decode()


KEY_VARIABLE = "BNPL_SECRET_KEY_FILE"


# The most a key file holds: the key as hex, with room for whitespace around it.
KEY_FILE_MAX_BYTES = 4 * KEY_BYTES


def read_key(path: Path) -> bytes | None:
    """The hex key in ``path``; None when there is no such file. A file that cannot be
    read or does not hold a key is a configuration error (78) naming the variable; so is
    anything but a regular file of a key's size (a FIFO, a device), found before a read
    that could wait for a writer or never end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        raise ConfigError(f"{KEY_VARIABLE}: {path} cannot be read") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise ConfigError(f"{KEY_VARIABLE}: {path} is not a regular file")
        if found.st_size > KEY_FILE_MAX_BYTES:
            raise ConfigError(
                f"{KEY_VARIABLE}: {path} is too large for a key file ({KEY_BYTES} bytes as hex)"
            )
        text = os.read(fd, KEY_FILE_MAX_BYTES + 1).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{KEY_VARIABLE}: {path} cannot be read") from None
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{KEY_VARIABLE}: {path} must hold {KEY_BYTES} bytes as hex")
    return key


def exposed(path: Path) -> bool:
    """Whether the key file can be read by its group or by others."""
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key(path: Path, key: bytes) -> None:
    """Write ``key`` as ``read_key`` reads it to a new file at ``path`` (mode 0600): to a
    private draft beside it, then linked into place, so the file appears whole or not at
    all. Never replaces anything (a file, a directory, a link, even a dangling one):
    ``FileExistsError``. Other ``OSError``: the file cannot be written there."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(draft, path, follow_symlinks=False)
    finally:
        draft.unlink()


def create_key(path: Path) -> bytes:
    """Generate the embedded database's key (its data directory made if need be); another
    process that created it first wins, and its key is returned."""
    key = new_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_key(path, key)
        except FileExistsError:
            theirs = read_key(path)
            if theirs is None:
                raise OSError("the key file vanished") from None
            return theirs
    except OSError:
        raise ConfigError(f"secret key file {path} cannot be created") from None
    return key
