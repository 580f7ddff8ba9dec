"""The secret keyring, checked against the database before anything is protected with it.

The database keeps a check of each key it has seen (``secret_keys``: a keyed HMAC of a
fixed label, never the key), which one is primary (``key_checks``, whose row also says
that the database has seen a key) and an unfinished rotation (``key_rotations``). A
command that protects or reads personal data takes its keyring from here
(``checked_keyring``: the file's enabled keys the database knows, each matching its
check; its primary the database's, its prior an unfinished rotation's from key):

- ``BNPL_SECRET_KEY_FILE`` set to a path that does not exist: exit 78, nothing created;
- unset with ``BNPL_DATABASE_URL`` set: exit 78 naming ``bnplctl keys init PATH``
  (``Settings.key_file``); a key is never generated beside an external database;
- unset for the embedded database, and the data directory's key file missing: a key is
  generated only if the database has never seen one (no key check, no user); else 78;
- a key whose check differs from the database's: exit 78;
- a database without a check yet (set up before checks existed, or new): the key must
  decrypt a stored passport if there is one, and its check is then written, in the
  caller's transaction, with the first protected value.

Every refusal happens before the caller writes anything.

``bnplctl keys init`` records a new keyring's checks in a database that has seen no key
(``record_new_keyring``), so that a second new key for the same database is refused (3).
Rotation, retirement and the keys' report are ``services/keys.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnplctl import clock, crypto
from bnplctl.errors import ConfigError, Refused
from bnplctl.services.audit import insert_events
from bnplctl.sql import run

if TYPE_CHECKING:
    from bnplctl.config import Settings
    from bnplctl.db import Executor

VARIABLE = crypto.KEY_VARIABLE
# Writers of passports take it shared in their transaction; `keys rotate` takes it
# exclusive to make a new key primary: a chunk or onboarding in flight commits under the
# key it began with, and the next one reads the new state (``write_state``).
KEYS_LOCK_ID = 0x62_6E_70_6C_4B59  # "bnpl" + "KY"
# Two statements in one round trip: the read must take its snapshot after the lock is
# granted (READ COMMITTED: a statement's snapshot is taken when it starts, before any
# wait inside it), so a writer that waited for a rotation's start sees the new primary.
_WRITE_STATE = (
    "SELECT pg_advisory_xact_lock_shared(:lock);"
    " SELECT (SELECT primary_key_id FROM key_checks WHERE id = 1),"
    " (SELECT from_key_id FROM key_rotations WHERE finished_at IS NULL)"
)


@dataclass(frozen=True)
class KeyState:
    """What ``status`` shows of the key: its file, and whether it matches the database."""

    path: Path | None  # None: an external database without BNPL_SECRET_KEY_FILE
    state: str  # matches | mismatch | missing | unusable | unchecked | none yet | not set
    exposed: bool


@dataclass(frozen=True)
class StoredKeys:
    """What the database keeps of the keyring: whether it has seen a key, its primary,
    each key's check and status, and the key an unfinished rotation rotates from."""

    seen: bool
    primary: int | None
    checks: dict[int, tuple[str, str]]  # key id -> (check, status)
    rotating_from: int | None
    pending: int | None = None  # a key a stopped rotation start was adding
    created: dict[int, datetime] = field(default_factory=dict)  # key id -> recorded at


def stored_keys(executor: Executor) -> StoredKeys:
    state = run(
        executor, "SELECT primary_key_id, pending_key_id FROM key_checks WHERE id = 1"
    ).first()
    primary = None if state is None else state[0]
    pending = None if state is None else state[1]
    rows = run(executor, "SELECT key_id, key_check, status, created_at FROM secret_keys").all()
    rotating = run(
        executor, "SELECT from_key_id FROM key_rotations WHERE finished_at IS NULL"
    ).scalar()
    return StoredKeys(
        seen=primary is not None,
        primary=None if primary is None else int(primary),
        checks={int(row[0]): (str(row[1]), str(row[2])) for row in rows},
        rotating_from=None if rotating is None else int(rotating),
        pending=None if pending is None else int(pending),
        created={int(row[0]): row[3] for row in rows},
    )


def write_state(executor: Executor) -> tuple[int | None, int | None]:
    """(the primary key, an unfinished rotation's from key), read under the shared keys
    lock, which the caller's transaction then holds: a key made primary meanwhile waits
    for it to commit."""
    row = run(executor, _WRITE_STATE, {"lock": KEYS_LOCK_ID}).one()
    return (None if row[0] is None else int(row[0])), (None if row[1] is None else int(row[1]))


def _sample_passport(executor: Executor) -> tuple[str, bytes] | None:
    row = run(
        executor, "SELECT user_id, passport_ciphertext FROM users ORDER BY user_id LIMIT 1"
    ).first()
    return None if row is None else (str(row[0]), bytes(row[1]))


def _decrypts(keyring: crypto.Keyring, sample: tuple[str, bytes]) -> bool:
    try:
        keyring.decrypt_passport(sample[1], sample[0])
    except ConfigError:
        return False
    return True


def mismatch(path: Path, key_id: int | None = None) -> ConfigError:
    """The error of a key file (``path``) that is not the database's."""
    which = "" if key_id is None else f" (its key {key_id} differs from the database's)"
    return ConfigError(f"{VARIABLE}: {path} is not the key this database was set up with{which}")


def matching(found: crypto.KeyFile, stored: StoredKeys, path: Path) -> dict[int, bytes]:
    """The file's keys this database has recorded and not retired, each checked against
    its check: a key that differs stops the command (78). The database decides what it
    retired: a key another database sharing the file retired there is still this one's
    while it is enabled here. A key the database has not recorded (another database's, or
    one a stopped rotation was adding) is left out."""
    keys: dict[int, bytes] = {}
    for entry in found.entries:
        known = stored.checks.get(entry.key_id)
        if known is None or known[1] != "enabled":
            continue
        if known[0] != crypto.SecretKey(entry.material, entry.key_id).key_check():
            raise mismatch(path, entry.key_id)
        keys[entry.key_id] = entry.material
    return keys


def checked_keyring(
    executor: Executor,
    settings: Settings,
    *,
    warn: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> crypto.Keyring:
    """The keyring of ``settings`` for a command that protects or reads personal data,
    checked against the database (see the module's docstring), under the shared keys
    lock (``write_state``); ``warn`` hears of a key file others can read. Its primary is
    the database's; its prior, an unfinished rotation's from key."""
    path = settings.required_key_file()
    write_state(executor)
    stored = stored_keys(executor)
    found = crypto.read_keyring(path)
    if found is None:
        if settings.secret_key_file is not None:
            raise ConfigError(f"{VARIABLE}: {path} does not exist")
        if stored.seen or _sample_passport(executor) is not None:
            raise ConfigError(
                f"{VARIABLE}: this database was set up with a secret key and {path} does not"
                f" exist; set {VARIABLE} to that key's file"
            )
        found = crypto.create_keyring(path, now or clock.now())
    if not stored.seen:
        sample = _sample_passport(executor)
        ring = crypto.Keyring(found.usable(), found.primary.key_id)
        if sample is not None and not _decrypts(ring, sample):
            raise mismatch(path)
        _record(executor, found, now=now or clock.now())
        stored = stored_keys(executor)  # another process's, if it was first
    keys = matching(found, stored, path)
    if stored.primary not in keys:
        raise ConfigError(
            f"{VARIABLE}: {path} lacks key {stored.primary}, which the database writes"
            " passports under (a rotation wrote it to the key file: is the variable naming"
            " that file?)"
        )
    if stored.rotating_from is not None and stored.rotating_from not in keys:
        raise ConfigError(
            f"{VARIABLE}: {path} lacks key {stored.rotating_from}, which an unfinished"
            " rotation still needs"
        )
    if warn is not None and crypto.exposed(path):
        warn(f"{VARIABLE}: {path} can be read by group or others; chmod 600 it")
    assert stored.primary is not None  # noqa: S101 - recorded above
    return crypto.Keyring(keys, stored.primary, stored.rotating_from)


def _record(executor: Executor, found: crypto.KeyFile, *, now: datetime) -> bool:
    """A database that has seen no key: the file's enabled keys' checks and its primary,
    in the caller's transaction (another process's first, if it was first: False). The
    insert holds the check's row until the caller commits: a concurrent recorder waits."""
    primary = found.primary
    recorded = run(
        executor,
        "INSERT INTO key_checks (id, key_check, primary_key_id) VALUES (1, :check, :primary)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        {
            "check": crypto.SecretKey(primary.material, primary.key_id).key_check(),
            "primary": primary.key_id,
        },
    ).first()
    for key_id, material in found.usable().items():
        entry = found.get(key_id)
        run(
            executor,
            "INSERT INTO secret_keys (key_id, key_check, created_at)"
            " VALUES (:key_id, :check, :created_at) ON CONFLICT (key_id) DO NOTHING",
            {
                "key_id": key_id,
                "check": crypto.SecretKey(material, key_id).key_check(),
                "created_at": (entry.created_at if entry else None) or now,
            },
        )
    return recorded is not None


def key_state(executor: Executor, path: Path | None) -> KeyState:
    """The state of the key file in ``path`` (the settings' ``key_file``), for
    ``status``; reads, never writes or creates."""
    stored = stored_keys(executor)
    if path is None:
        return KeyState(None, "not set", exposed=False)
    try:
        found = crypto.read_keyring(path)
    except ConfigError:
        return KeyState(path, "unusable", exposed=False)
    if found is None:
        has_data = stored.seen or _sample_passport(executor) is not None
        return KeyState(path, "missing" if has_data else "none yet", exposed=False)
    if not stored.seen:  # the next command that protects data checks it, and records it
        return KeyState(path, "unchecked", exposed=crypto.exposed(path))
    try:
        keys = matching(found, stored, path)
    except ConfigError:
        return KeyState(path, "mismatch", exposed=crypto.exposed(path))
    state = "matches" if stored.primary in keys else "mismatch"
    return KeyState(path, state, exposed=crypto.exposed(path))


def record_new_keyring(
    executor: Executor, found: crypto.KeyFile, *, path: Path, actor: str, now: datetime
) -> None:
    """Make ``found`` (a keyring just generated, not yet written) this database's: its
    keys' checks and a ``key.initialized`` audit event (the file's path, never a key or
    its check), in the caller's transaction. Refused (3) when the database already has a
    key check or a stored passport, which a new key could never match. The insert holds
    the check's row until the caller commits: a concurrent ``keys init`` waits, then is
    refused."""
    if not _record(executor, found, now=now):
        raise Refused(
            f"this database already has a secret key (its check in key_checks), which a new"
            f" key would not match: set {VARIABLE} to the file of the key it was set up with"
        )
    if _sample_passport(executor) is not None:
        raise Refused(
            f"this database holds passports protected with a secret key, which a new key"
            f" would not open: set {VARIABLE} to the file of the key it was set up with"
        )
    audit_key(executor, now, actor, "key.initialized", found.primary.key_id, file=str(path))


def audit_key(
    executor: Executor, now: datetime, actor: str, action: str, key_id: int, **details: Any
) -> None:
    """An audit event about a key (``key.*``), in the caller's transaction: its id and
    ``details``, never a key or its check."""
    run(
        executor,
        insert_events(
            "VALUES (:now, :actor, :action, 'key', :key_id, NULL, CAST(:details AS jsonb))"
        ),
        {
            "now": now,
            "actor": actor,
            "action": action,
            "key_id": str(key_id),
            "details": json.dumps(details),
        },
    )
