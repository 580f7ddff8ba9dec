"""The secret key, checked against the database before anything is protected with it.

The database keeps a key check (``key_checks``: a keyed HMAC of a fixed label, never the
key). A command that protects or reads personal data takes its key from here:

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

``bnplctl keys init`` records a new key's check in a database that has seen no key
(``record_new_key``), so that a second new key for the same database is refused (3).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bnplctl import crypto
from bnplctl.errors import ConfigError, Refused
from bnplctl.services.audit import insert_events
from bnplctl.sql import run

if TYPE_CHECKING:
    from bnplctl.config import Settings
    from bnplctl.db import Executor

VARIABLE = crypto.KEY_VARIABLE


@dataclass(frozen=True)
class KeyState:
    """What ``status`` shows of the key: its file, and whether it matches the database."""

    path: Path | None  # None: an external database without BNPL_SECRET_KEY_FILE
    state: str  # matches | mismatch | missing | unusable | unchecked | none yet | not set
    exposed: bool


def _stored_check(executor: Executor) -> str | None:
    value = run(executor, "SELECT key_check FROM key_checks WHERE id = 1").scalar()
    return None if value is None else str(value)


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


def mismatch(path: Path) -> ConfigError:
    """The error of a key (``path``) that is not the database's."""
    return ConfigError(f"{VARIABLE}: {path} is not the key this database was set up with")


def checked_key(
    executor: Executor, settings: Settings, *, warn: Callable[[str], None] | None = None
) -> bytes:
    """The key of ``settings`` for a command that protects or reads personal data, checked
    against the database (see the module's docstring); ``warn`` hears of a key file others
    can read."""
    path = settings.required_key_file()
    stored = _stored_check(executor)
    master = crypto.read_key(path)
    if master is None:
        if settings.secret_key_file is not None:
            raise ConfigError(f"{VARIABLE}: {path} does not exist")
        if stored is not None or _sample_passport(executor) is not None:
            raise ConfigError(
                f"{VARIABLE}: this database was set up with a secret key and {path} does not"
                f" exist; set {VARIABLE} to that key's file"
            )
        master = crypto.create_key(path)
    keyring = crypto.Keyring(master)
    if stored is None:
        sample = _sample_passport(executor)
        if sample is not None and not _decrypts(keyring, sample):
            raise mismatch(path)
        run(
            executor,
            "INSERT INTO key_checks (id, key_check) VALUES (1, :check) ON CONFLICT (id) DO NOTHING",
            {"check": keyring.key_check()},
        )
        stored = _stored_check(executor)  # another process's, if it was first
    if stored != keyring.key_check():
        raise mismatch(path)
    if warn is not None and crypto.exposed(path):
        warn(f"{VARIABLE}: {path} can be read by group or others; chmod 600 it")
    return master


def key_state(executor: Executor, path: Path | None) -> KeyState:
    """The state of the key in ``path`` (the settings' ``key_file``), for ``status``;
    reads, never writes or creates."""
    stored = _stored_check(executor)
    if path is None:
        return KeyState(None, "not set", exposed=False)
    try:
        master = crypto.read_key(path)
    except ConfigError:
        return KeyState(path, "unusable", exposed=False)
    if master is None:
        has_data = stored is not None or _sample_passport(executor) is not None
        return KeyState(path, "missing" if has_data else "none yet", exposed=False)
    if stored is None:  # the next command that protects data checks it, and records it
        return KeyState(path, "unchecked", exposed=crypto.exposed(path))
    state = "matches" if stored == crypto.Keyring(master).key_check() else "mismatch"
    return KeyState(path, state, exposed=crypto.exposed(path))


def record_new_key(
    executor: Executor, master: bytes, *, path: Path, actor: str, now: datetime
) -> None:
    """Make ``master`` (a key just generated, not yet written) this database's key: its
    check and a ``key.initialized`` audit event (the file's path, never the key or its
    check), in the caller's transaction. Refused (3) when the database already has a key
    check or a stored passport, which a new key could never match. The insert holds the
    check's row until the caller commits: a concurrent ``keys init`` waits, then is
    refused."""
    recorded = run(
        executor,
        "INSERT INTO key_checks (id, key_check) VALUES (1, :check)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        {"check": crypto.Keyring(master).key_check()},
    ).first()
    if recorded is None:
        raise Refused(
            f"this database already has a secret key (its check in key_checks), which a new"
            f" key would not match: set {VARIABLE} to the file of the key it was set up with"
        )
    if _sample_passport(executor) is not None:
        raise Refused(
            f"this database holds passports protected with a secret key, which a new key"
            f" would not open: set {VARIABLE} to the file of the key it was set up with"
        )
    run(
        executor,
        insert_events(
            "VALUES (:now, :actor, 'key.initialized', 'key', '0', NULL, CAST(:details AS jsonb))"
        ),
        {"now": now, "actor": actor, "details": json.dumps({"file": str(path)})},
    )
