"""The keyring and what is derived from each of its keys: passport encryption (AES-GCM,
its header naming the key, bound with the row's user id), the passport blind index and
card fingerprints (HMAC), each key's check the database keeps; and the key file (read,
written whole, generated): a keyring (``KeyFile``, versioned JSON) or, from before
keyrings, a single key as hex, which is key 0.

Nothing here ever puts key material into an exception message or a repr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bnplctl.errors import ConfigError

KEY_BYTES = 32
PURPOSE = "pii"  # passport encryption, passport blind index, card fingerprints
MAX_KEY_ID = 32767  # a smallint in the database
# A ciphertext's first byte: 1, the first format (nonce + sealed; read as key 0);
# 2, the keyring's (key id as 2 bytes big-endian, nonce, sealed), whose header is bound
# in with the user id as associated data.
_V1 = 1
_V2 = 2


def header(key_id: int) -> bytes:
    return bytes((_V2,)) + key_id.to_bytes(2, "big")


def ciphertext_key_id(blob: bytes) -> int | None:
    """The key id a passport ciphertext names (0 for the first format); None when the
    bytes are no ciphertext of a known format."""
    if blob[:1] == bytes((_V1,)) and len(blob) > 13:
        return 0
    if blob[:1] == bytes((_V2,)) and len(blob) > 15:
        return int.from_bytes(blob[1:3], "big")
    return None


class SecretKey:
    """One key of the keyring and what is derived from it: AES-GCM for passports, HMAC
    for the passport blind index and card fingerprints, and its check."""

    def __init__(self, master: bytes, key_id: int = 0) -> None:
        if len(master) != KEY_BYTES:
            raise ConfigError(f"secret key must be {KEY_BYTES} bytes")
        self.key_id = key_id
        self._header = header(key_id)
        self._encryption_key = self._derive(master, b"bnplctl/passport-encryption/v1")
        self._passport_index_key = self._derive(master, b"bnplctl/passport-blind-index/v1")
        self._card_key = self._derive(master, b"bnplctl/card-fingerprint/v1")
        self._key_check = self._derive(master, b"bnplctl/key-check/v1").hex()
        self._cipher: Any = None
        # Keyed once; each digest starts from a copy (half the cost of a fresh HMAC).
        self._passport_mac = hmac.new(self._passport_index_key, digestmod=hashlib.sha256)
        self._card_mac = hmac.new(self._card_key, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"SecretKey(key_id={self.key_id})"  # never the key

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
        """AES-GCM with a random nonce, behind a header naming the key; the header and the
        user id are bound in as associated data (copied onto another row, or given
        another key id, it no longer decrypts)."""
        nonce = os.urandom(12)
        bound = self._header + user_id.encode()
        sealed: bytes = self._aead().encrypt(nonce, passport.encode(), bound)
        return self._header + nonce + sealed

    def decrypt_passport(self, blob: bytes, user_id: str) -> str:
        from cryptography.exceptions import InvalidTag

        found = ciphertext_key_id(blob)
        if found is None:
            raise ConfigError("passport ciphertext has an unknown format")
        if found != self.key_id:
            raise ConfigError(f"passport ciphertext is under key {found}, not key {self.key_id}")
        if blob[0] == _V1:
            nonce, sealed, bound = blob[1:13], blob[13:], user_id.encode()
        else:
            nonce, sealed, bound = blob[3:15], blob[15:], blob[:3] + user_id.encode()
        try:
            plain: bytes = self._aead().decrypt(nonce, sealed, bound)
        except InvalidTag:
            raise ConfigError(
                f"passport cannot be decrypted with key {self.key_id} for this row"
            ) from None
        return plain.decode()


class Keyring:
    """The keys a command works with: new passports and card fingerprints go under the
    ``primary``; ``prior``, while a rotation is unfinished, is the key it rotates from,
    whose blind index a new passport is looked up under too (no duplicate across the
    two); any of ``keys`` decrypts what names it.

    ``Keyring(master)``: a single key, key 0, primary."""

    def __init__(
        self, keys: bytes | Mapping[int, bytes], primary: int = 0, prior: int | None = None
    ) -> None:
        given = {0: keys} if isinstance(keys, bytes) else dict(keys)
        self._given = given
        self.keys = {key_id: SecretKey(master, key_id) for key_id, master in given.items()}
        if primary not in self.keys or (prior is not None and prior not in self.keys):
            raise ConfigError("the keyring lacks a key it is to use")
        self.primary_id = primary
        self.prior_id = prior
        self._primary = self.keys[primary]
        self._prior = None if prior is None else self.keys[prior]

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent to a users import's worker processes with each chunk (its HMAC objects
        are made again there)."""
        return (Keyring, (self._given, self.primary_id, self.prior_id))

    def state(self) -> tuple[int, int | None]:
        """(primary, prior): what a chunk protected under it is written as."""
        return self.primary_id, self.prior_id

    def __repr__(self) -> str:
        shown = f"primary={self.primary_id}, prior={self.prior_id}, keys={sorted(self.keys)}"
        return f"Keyring({shown})"

    def key(self, key_id: int) -> SecretKey:
        found = self.keys.get(key_id)
        if found is None:
            raise ConfigError(f"the keyring has no key {key_id}")
        return found

    def key_check(self) -> str:
        return self._primary.key_check()

    def passport_index(self, passport: str) -> str:
        return self._primary.passport_index(passport)

    def prior_index(self, passport: str) -> str | None:
        """The passport's blind index under the key an unfinished rotation rotates from."""
        return None if self._prior is None else self._prior.passport_index(passport)

    def card_fingerprint(self, digits: str) -> str:
        return self._primary.card_fingerprint(digits)

    def card_fingerprints(self, digits: str) -> dict[int, str]:
        """The card's fingerprint under every key of the ring: a card fingerprinted under
        any of them is found again."""
        return {key_id: key.card_fingerprint(digits) for key_id, key in self.keys.items()}

    def encrypt_passport(self, passport: str, user_id: str) -> bytes:
        return self._primary.encrypt_passport(passport, user_id)

    def decrypt_passport(self, blob: bytes, user_id: str) -> str:
        """Under the key the ciphertext names."""
        found = ciphertext_key_id(blob)
        if found is None:
            raise ConfigError("passport ciphertext has an unknown format")
        return self.key(found).decrypt_passport(blob, user_id)


KEY_VARIABLE = "BNPL_SECRET_KEY_FILE"


# The most a key file holds: a keyring of a few hundred keys.
KEY_FILE_MAX_BYTES = 1 << 16
KEYRING_FORMAT = "bnplctl-keyring"
KEYRING_VERSION = 1
STATUSES = ("enabled", "retired")


@dataclass(frozen=True)
class KeyEntry:
    """One key of the key file: its id, its material (never shown), whether it is enabled
    or retired, whether it is its purpose's primary, and when it was made."""

    key_id: int
    material: bytes = field(repr=False)
    status: str = "enabled"
    primary: bool = False
    created_at: datetime | None = None
    purpose: str = PURPOSE


@dataclass(frozen=True)
class KeyFile:
    """What ``BNPL_SECRET_KEY_FILE`` holds: a keyring (a versioned JSON document), or a
    single key as hex (``legacy``), which is the keyring's key 0."""

    entries: tuple[KeyEntry, ...]
    legacy: bool = False

    def get(self, key_id: int) -> KeyEntry | None:
        return next((entry for entry in self.entries if entry.key_id == key_id), None)

    @property
    def primary(self) -> KeyEntry:
        return next(entry for entry in self.entries if entry.primary)

    def usable(self) -> dict[int, bytes]:
        """The enabled keys' material by id (a retired key is used for nothing)."""
        return {entry.key_id: entry.material for entry in self.entries if entry.status == "enabled"}

    def with_new_primary(self, now: datetime, known: Iterable[int] = ()) -> KeyFile:
        """A new key, made primary (ids never reused: above every id here or in
        ``known``); the others kept as they are, no longer primary."""
        key_id = max([entry.key_id for entry in self.entries] + list(known)) + 1
        if key_id > MAX_KEY_ID:
            raise ConfigError(f"{KEY_VARIABLE}: no key id is left after {MAX_KEY_ID}")
        kept = tuple(replace(entry, primary=False) for entry in self.entries)
        return KeyFile((*kept, KeyEntry(key_id, new_key(), primary=True, created_at=now)))

    def with_retired(self, key_id: int) -> KeyFile:
        return KeyFile(
            tuple(
                replace(entry, status="retired") if entry.key_id == key_id else entry
                for entry in self.entries
            )
        )

    def legacy_text(self) -> str:
        return self.primary.material.hex() + "\n"

    def render(self) -> str:
        keys = [
            {
                "id": entry.key_id,
                "purpose": entry.purpose,
                "status": entry.status,
                "primary": entry.primary,
                "created_at": None if entry.created_at is None else entry.created_at.isoformat(),
                "key": entry.material.hex(),
            }
            for entry in self.entries
        ]
        document = {"format": KEYRING_FORMAT, "version": KEYRING_VERSION, "keys": keys}
        return json.dumps(document, indent=2) + "\n"


def new_keyring(now: datetime) -> KeyFile:
    """A keyring of one new key, key 0, primary."""
    return KeyFile((KeyEntry(0, new_key(), primary=True, created_at=now),))


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise ValueError("a name given twice")
        found[name] = value
    return found


def parse_keyring(text: str, path: Path) -> KeyFile:
    """The key file's text: a keyring, or a single key as hex. Anything else, or a
    keyring that breaks a rule (ids unique and in range, a 32-byte key each, one enabled
    primary, known purposes and statuses), is a configuration error naming the file,
    never showing what it holds."""
    bad = f"{KEY_VARIABLE}: {path}"
    if not text.startswith("{"):
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{bad} must hold {KEY_BYTES} bytes as hex (a single key) or a keyring"
            )
        return KeyFile((KeyEntry(0, key, primary=True),), legacy=True)
    try:
        document = json.loads(text, object_pairs_hook=_unique_pairs)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's stack
        raise ConfigError(f"{bad} is not a keyring (not JSON, or a name given twice)") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != KEYRING_FORMAT
        or document.get("version") != KEYRING_VERSION
        or not isinstance(document.get("keys"), list)
        or not document["keys"]
    ):
        raise ConfigError(
            f"{bad} is not a keyring of version {KEYRING_VERSION} with at least one key"
        )
    entries = tuple(_entry(item, bad) for item in document["keys"])
    ids = [entry.key_id for entry in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{bad} names a key id twice")
    primaries = [entry for entry in entries if entry.primary]
    if len(primaries) != 1 or primaries[0].status != "enabled":
        raise ConfigError(f"{bad} must have exactly one primary key, enabled")
    return KeyFile(entries)


def _entry(item: Any, bad: str) -> KeyEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{bad}: a key is not an object")
    key_id = item.get("id")
    if type(key_id) is not int or not 0 <= key_id <= MAX_KEY_ID:
        raise ConfigError(f"{bad}: a key id must be a whole number from 0 to {MAX_KEY_ID}")
    where = f"{bad}: key {key_id}"
    unknown = set(item) - {"id", "purpose", "status", "primary", "created_at", "key"}
    if unknown:
        raise ConfigError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    if item.get("purpose", PURPOSE) != PURPOSE:
        raise ConfigError(f"{where}: purpose must be {PURPOSE!r}")
    status = item.get("status", "enabled")
    if status not in STATUSES:
        raise ConfigError(f"{where}: status must be enabled or retired")
    primary = item.get("primary", False)
    if not isinstance(primary, bool):
        raise ConfigError(f"{where}: primary must be true or false")
    created = item.get("created_at")
    created_at = None
    if created is not None:
        try:
            created_at = datetime.fromisoformat(created) if isinstance(created, str) else None
        except ValueError:
            created_at = None
        if created_at is None or created_at.tzinfo is None:
            raise ConfigError(f"{where}: created_at must be an ISO time with its offset")
    material = item.get("key")
    try:
        key = bytes.fromhex(material) if isinstance(material, str) else b""
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where} must hold {KEY_BYTES} bytes as hex")
    return KeyEntry(key_id, key, status, primary, created_at)


def read_keyring(path: Path) -> KeyFile | None:
    """The key file at ``path``; None when there is no such file. A file that cannot be
    read or does not hold a keyring or key is a configuration error (78) naming the
    variable; so is anything but a regular file of a key file's size (a FIFO, a device),
    found before a read that could wait for a writer or never end."""
    found = read_keyring_bytes(path)
    return None if found is None else found[0]


def read_keyring_bytes(path: Path) -> tuple[KeyFile, bytes] | None:
    """``read_keyring``, and the bytes it was read from (``write_keyring``'s
    ``expected``)."""
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
            raise ConfigError(f"{KEY_VARIABLE}: {path} is too large for a key file")
        chunks = []
        while block := os.read(fd, KEY_FILE_MAX_BYTES + 1):
            chunks.append(block)
            if sum(map(len, chunks)) > KEY_FILE_MAX_BYTES:
                raise ConfigError(f"{KEY_VARIABLE}: {path} is too large for a key file")
        raw = b"".join(chunks)
        text = raw.decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{KEY_VARIABLE}: {path} cannot be read") from None
    finally:
        os.close(fd)
    return parse_keyring(text, path), raw


class KeyFileChanged(Exception):
    """The key file is not what the writer read: another writer replaced it meanwhile."""


def read_key(path: Path) -> bytes | None:
    """The primary key's material of the key file at ``path`` (``read_keyring``)."""
    found = read_keyring(path)
    return None if found is None else found.primary.material


def exposed(path: Path) -> bool:
    """Whether the key file can be read by its group or by others."""
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_keyring(
    path: Path, keyring: KeyFile, *, replace: bool = False, expected: bytes | None = None
) -> None:
    """Write ``keyring`` to ``path`` (mode 0600): to a private draft beside it, synced,
    then linked into place (a new file: never replaces anything, not even a dangling
    link: ``FileExistsError``) or, with ``replace``, renamed over the file, so that the
    file is always whole, the old keyring or the new. A replaced file keeps its owner
    and group where this process may give them, and is replaced only while it still
    holds ``expected`` (what the writer read), under a lock on its directory that every
    writer takes: ``KeyFileChanged`` otherwise (two rotations at once, of two databases
    sharing the file, cannot lose a key). Drafts a killed writer left are removed. Other
    ``OSError``: it cannot be written there."""
    if not replace:
        _write_draft_then(path, keyring, replace=False)
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        if expected is not None:
            found = read_keyring_bytes(path)
            if found is None or found[1] != expected:
                raise KeyFileChanged(str(path))
        _remove_stale_drafts(path)
        _write_draft_then(path, keyring, replace=True)
    finally:
        os.close(directory)  # and its lock


def _remove_stale_drafts(path: Path) -> None:
    """Drafts of ``path`` (``.NAME.PID.HEX``) whose writer is gone: a copy of the keys."""
    for draft in path.parent.glob(f".{path.name}.*.*"):
        pid = draft.name[len(path.name) + 2 :].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                draft.unlink()
        except OSError:  # alive, another user's
            continue


def _write_draft_then(path: Path, keyring: KeyFile, *, replace: bool) -> None:
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    owner = None
    if replace:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a link is never replaced)")
        owner = (before.st_uid, before.st_gid)
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            if owner is not None and owner != (os.getuid(), os.getgid()):
                with contextlib.suppress(OSError):
                    os.fchown(handle.fileno(), *owner)
            handle.write(keyring.legacy_text() if keyring.legacy else keyring.render())
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(draft, path)
            _sync_directory(path.parent)
        else:
            os.link(draft, path, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            draft.unlink()


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_key(path: Path, key: bytes) -> None:
    """A single key as hex in a new file at ``path`` (``write_keyring``)."""
    write_keyring(path, KeyFile((KeyEntry(0, key, primary=True),), legacy=True))


def create_key(path: Path) -> bytes:
    """``create_keyring`` now; the primary key's material."""
    from datetime import UTC

    return create_keyring(path, datetime.now(UTC)).primary.material


def create_keyring(path: Path, now: datetime) -> KeyFile:
    """Generate the embedded database's keyring (its data directory made if need be);
    another process that created it first wins, and its keyring is returned."""
    keyring = new_keyring(now)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_keyring(path, keyring)
        except FileExistsError:
            theirs = read_keyring(path)
            if theirs is None:
                raise OSError("the key file vanished") from None
            return theirs
    except OSError:
        raise ConfigError(f"secret key file {path} cannot be created") from None
    return keyring
