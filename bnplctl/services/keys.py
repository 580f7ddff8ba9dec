"""Rotating the secret keys: ``keys rotate``, ``keys retire``, ``keys status`` and
``verify --keys``.

The keyring (``BNPL_SECRET_KEY_FILE``, ``crypto.KeyFile``) holds the keys; the database
keeps each one's check (``secret_keys``), its primary (``key_checks.primary_key_id``)
and each rotation (``key_rotations``). A rotation, as Tink's keysets are rotated
(add, promote, re-encrypt, retire):

1. *start*: a new key is added to the file (written whole, beside it and renamed over
   it; the old keys kept), then, in one transaction under the **exclusive** keys lock
   (``secret_key.KEYS_LOCK_ID``: every writer of passports holds it shared in its own),
   recorded, made primary and the rotation opened, audited ``key.added``,
   ``key.promoted``, ``key.rotation_started``. A writer in flight commits under the old
   key first; every later one writes under the new key and looks a passport up under
   both keys' blind indexes (the *prior* one too), so no duplicate gets in while rows
   under both exist.
2. *re-encrypt*: batches of users in ``user_id`` order, each in its own transaction:
   each passport decrypted under the key it names, encrypted under the new key (bound to
   its row) and blind-indexed under it; the update sets only those columns and only
   where the ciphertext is still the one read (a row changed meanwhile is left as its
   writer made it). The rotation's row keeps the progress, so a kill loses at most the
   batch in flight: ``keys rotate --resume`` goes on from the first row not done.
3. *finish*: once no passport is under another key, the rotation is closed
   (``key.rotation_finished``). The old key stays, enabled, until ``keys retire``.

One ``keys rotate`` or ``keys retire`` runs at a time (a session-level advisory lock:
a second is 75 at once). Card fingerprints cannot be recomputed (the number is never
stored): each row's stays under the key it was made with (``users.card_key_id``).
Nothing here ever puts key material, or a key's check, into output, logs or audit.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnplctl import crypto
from bnplctl.errors import BnplError, ConfigError, ExitCode, NotFound, Refused, Unavailable
from bnplctl.services.secret_key import (
    KEYS_LOCK_ID,
    VARIABLE,
    StoredKeys,
    audit_key,
    checked_keyring,
    matching,
    stored_keys,
)
from bnplctl.sql import run

if TYPE_CHECKING:
    from bnplctl.config import Settings
    from bnplctl.db import Database, Executor

ROTATE_LOCK_ID = 0x62_6E_70_6C_4B52  # "bnpl" + "KR": one keys rotate or retire at a time
BATCH_ROWS = 5_000
RETRY_SECONDS = 0.2

# The next rows not under the rotation's key, locked; a row another transaction holds is
# skipped (never waited for: a sweep or a command updating users never deadlocks with a
# rotation), and taken on the next pass.
_BATCH = (
    "SELECT user_id, passport_ciphertext FROM users"
    " WHERE user_id > :after AND passport_key_id <> :to"
    " ORDER BY user_id LIMIT :rows FOR UPDATE SKIP LOCKED"
)  # the primary key's own order (its collation): an index range scan, never a sort
# The passports not yet under a rotation's key.
_LEFT = "SELECT count(*) FROM users WHERE passport_key_id <> :to"
_UPDATE = (
    "UPDATE users SET passport_ciphertext = v.sealed, passport_blind_index = v.index,"
    " passport_key_id = %(to)s"
    " FROM unnest(%(ids)s::text[], %(sealed)s::bytea[], %(index)s::text[], %(was)s::bytea[])"
    " AS v (user_id, sealed, index, was)"
    " WHERE users.user_id = v.user_id AND users.passport_ciphertext = v.was"
)


class RotationBroken(BnplError):
    """A passport the rotation cannot decrypt (tampered, copied, or under a key the file
    lacks): the rotation stops, unfinished, naming the rows."""

    exit_code = ExitCode.UNHEALTHY


@dataclass(frozen=True)
class Rotation:
    """A rotation as ``key_rotations`` records it."""

    id: int
    from_key_id: int
    to_key_id: int
    started_at: datetime
    finished_at: datetime | None
    rows_total: int
    rows_done: int
    last_user_id: str | None

    def public(self) -> dict[str, Any]:
        return {
            "rotation_id": self.id,
            "from_key_id": self.from_key_id,
            "to_key_id": self.to_key_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
        }


@dataclass(frozen=True)
class RotationResult:
    rotation: Rotation
    started: bool  # this run added the key (else it resumed one)
    rows_rotated: int  # by this run
    seconds: float

    def public(self) -> dict[str, Any]:
        return self.rotation.public() | {
            "started": self.started,
            "rows_rotated": self.rows_rotated,
            "duration_seconds": round(self.seconds, 3),
        }


_ROTATION_COLUMNS = (
    "id, from_key_id, to_key_id, started_at, finished_at, rows_total, rows_done, last_user_id"
)


def _rotation(row: Any) -> Rotation | None:
    if row is None:
        return None
    return Rotation(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        row[3],
        row[4],
        int(row[5]),
        int(row[6]),
        None if row[7] is None else str(row[7]),
    )


def unfinished(executor: Executor) -> Rotation | None:
    return _rotation(
        run(
            executor,
            f"SELECT {_ROTATION_COLUMNS} FROM key_rotations WHERE finished_at IS NULL",  # noqa: S608
        ).first()
    )


def last_rotation(executor: Executor) -> Rotation | None:
    return _rotation(
        run(
            executor,
            f"SELECT {_ROTATION_COLUMNS} FROM key_rotations ORDER BY id DESC LIMIT 1",  # noqa: S608
        ).first()
    )


@contextmanager
def _one_at_a_time(database: Database) -> Iterator[Callable[..., Any]]:
    """A series of units on one connection holding the session-level rotate lock: a
    second ``keys rotate`` or ``keys retire`` is 75 at once."""
    with database.units(raw=True) as next_unit:
        with next_unit() as work:
            held = run(work.dbapi, "SELECT pg_try_advisory_lock(:id)", {"id": ROTATE_LOCK_ID})
            if not held.scalar():
                raise Unavailable(
                    "another keys rotate or keys retire is running; retry when it has ended"
                )
        try:
            yield next_unit
        finally:
            try:
                with next_unit() as work:
                    run(work.dbapi, "SELECT pg_advisory_unlock(:id)", {"id": ROTATE_LOCK_ID})
            except BnplError:  # a dead connection takes its lock with it
                pass


@dataclass(frozen=True)
class _Read:
    path: Path
    keys: crypto.KeyFile
    raw: bytes  # what was read: the file is replaced only while it still holds it


def _key_file(settings: Settings) -> _Read:
    path = settings.required_key_file()
    found = crypto.read_keyring_bytes(path)
    if found is None:
        raise ConfigError(f"{VARIABLE}: {path} does not exist")
    return _Read(path, *found)


def _write(read: _Read, keyring: crypto.KeyFile) -> None:
    """The key file replaced by ``keyring``, whole, if it still holds what was read (75
    when another writer replaced it meanwhile; 74 when it cannot be: nothing changed)."""
    from bnplctl.errors import OutputError

    path = read.path
    if path.is_symlink():
        raise OutputError(
            f"{VARIABLE}: {path} is a symbolic link (a mounted secret?), which keys rotate and"
            " keys retire never replace; nothing was changed: run them where the key file"
            " itself is, then give every host the new file"
        )
    try:
        crypto.write_keyring(path, keyring, replace=True, expected=read.raw)
    except crypto.KeyFileChanged:
        raise Unavailable(
            f"{VARIABLE}: {path} changed since this command read it (another keys rotate or"
            " keys retire, perhaps of another database sharing the file); nothing was"
            " changed: run it again"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"{VARIABLE}: {path} cannot be rewritten ({reason}); nothing was changed: the"
            " key file and its directory must be writable by whoever runs keys rotate or"
            " keys retire"
        ) from None


def rotate(
    database: Database,
    settings: Settings,
    *,
    resume: bool,
    actor: str,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None = None,
    batch_rows: int | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> RotationResult | None:
    """``keys rotate`` (a new key, primary, every passport re-encrypted under it) or,
    with ``resume``, the unfinished one finished. None: ``resume`` found nothing to do.
    ``progress(done, total)`` after each batch; ``after_batch(k)`` (tests) too."""
    began = time.monotonic()
    with _one_at_a_time(database) as next_unit:
        with next_unit() as work:
            read = _key_file(settings)
            found = read.keys
            checked_keyring(work.dbapi, settings, now=now())  # the file is the database's
            stored = stored_keys(work.dbapi)
            open_rotation = unfinished(work.dbapi)
        pending = stored.pending  # a start of this database's, stopped half-way
        if not resume:
            if open_rotation is not None:
                left = open_rotation.rows_total - open_rotation.rows_done
                raise Refused(
                    f"a rotation from key {open_rotation.from_key_id} to key"
                    f" {open_rotation.to_key_id} is unfinished (about {max(left, 0)} rows"
                    " left): run `bnplctl keys rotate --resume`"
                )
            if pending is not None:
                raise Refused(
                    f"a rotation of this database to key {pending} stopped before it began:"
                    " run `bnplctl keys rotate --resume`"
                )
        started = False
        if open_rotation is None:
            if resume and pending is None:
                return None
            entry = None if pending is None else found.get(pending)
            if entry is None:  # a new key (or the stopped start's never reached the file)
                with next_unit() as work:
                    first = run(
                        work.dbapi, "SELECT created_at FROM secret_keys WHERE key_id = 0"
                    ).scalar()
                found = _with_new_key(found, stored, now(), first)
                entry = found.primary
                _mark_pending(next_unit, entry.key_id)
                try:
                    _write(read, found)
                except BnplError:  # nothing was written: nothing is pending
                    _mark_pending(next_unit, None)
                    raise
            with next_unit() as work:
                open_rotation = _start(work.dbapi, entry, actor=actor, now=now())
            started = True
            with next_unit() as work:
                stored = stored_keys(work.dbapi)
        keyring = _rotation_keyring(found, stored, open_rotation, read.path)
        with database.units(raw=True) as second:
            rotated = _reencrypt(
                (next_unit, second),
                keyring,
                open_rotation,
                batch_rows or BATCH_ROWS,
                progress,
                after_batch,
            )
        with next_unit() as work:
            closed = _finish(work.dbapi, open_rotation, actor=actor, now=now())
    return RotationResult(closed, started, rotated, time.monotonic() - began)


def _mark_pending(next_unit: Callable[..., Any], key_id: int | None) -> None:
    with next_unit() as work:
        run(work.dbapi, "UPDATE key_checks SET pending_key_id = :id WHERE id = 1", {"id": key_id})


def _with_new_key(
    found: crypto.KeyFile, stored: StoredKeys, now: datetime, first: datetime | None
) -> crypto.KeyFile:
    """The file with a new primary key; a single-key file becomes a keyring, its key 0
    dated by the database's record of it (``first``)."""
    if found.legacy:
        from dataclasses import replace

        found = crypto.KeyFile((replace(found.entries[0], created_at=first),))
    return found.with_new_primary(now, known=stored.checks)


def _start(executor: Executor, new: crypto.KeyEntry, *, actor: str, now: datetime) -> Rotation:
    """The new key (in the key file already) recorded, made primary and the rotation
    opened, under the exclusive keys lock (writers in flight commit first); the pending
    mark cleared."""
    run(executor, "SELECT pg_advisory_xact_lock(:id)", {"id": KEYS_LOCK_ID})
    stored = stored_keys(executor)
    if unfinished(executor) is not None:  # another process's, since the check
        raise Refused("a rotation was started meanwhile: run `bnplctl keys rotate --resume`")
    old = stored.primary
    assert old is not None  # noqa: S101 - checked_keyring recorded one
    run(
        executor,
        "INSERT INTO secret_keys (key_id, key_check, created_at) VALUES (:id, :check, :created)",
        {
            "id": new.key_id,
            "check": crypto.SecretKey(new.material, new.key_id).key_check(),
            "created": new.created_at or now,
        },
    )
    run(
        executor,
        "UPDATE key_checks SET primary_key_id = :id, pending_key_id = NULL WHERE id = 1",
        {"id": new.key_id},
    )
    total = run(executor, _LEFT, {"to": new.key_id}).scalar()
    row = run(
        executor,
        "INSERT INTO key_rotations (from_key_id, to_key_id, actor, started_at, rows_total)"  # noqa: S608 - fixed column names
        " VALUES (:old, :new, :actor, :now, :total) RETURNING " + _ROTATION_COLUMNS,
        {"old": old, "new": new.key_id, "actor": actor, "now": now, "total": int(total)},
    ).one()
    rotation = _rotation(row)
    assert rotation is not None  # noqa: S101
    audit_key(executor, now, actor, "key.added", new.key_id, purpose=new.purpose)
    audit_key(executor, now, actor, "key.promoted", new.key_id, previous_primary=old)
    audit_key(
        executor,
        now,
        actor,
        "key.rotation_started",
        new.key_id,
        rotation_id=rotation.id,
        from_key_id=old,
        rows=rotation.rows_total,
    )
    return rotation


def _rotation_keyring(
    found: crypto.KeyFile, stored: StoredKeys, rotation: Rotation, path: Path
) -> crypto.Keyring:
    usable = matching(found, stored, path)
    for key_id in (rotation.from_key_id, rotation.to_key_id):
        if key_id not in usable:
            raise ConfigError(
                f"{VARIABLE}: {path} lacks key {key_id}, which the unfinished rotation needs"
            )
    return crypto.Keyring(usable, rotation.to_key_id, rotation.from_key_id)


def _reencrypt(
    series: tuple[Callable[..., Any], Callable[..., Any]],
    keyring: crypto.Keyring,
    rotation: Rotation,
    batch_rows: int,
    progress: Callable[[int, int], None] | None,
    after_batch: Callable[[int], None] | None,
) -> int:
    """Every passport not under the rotation's key put under it, a batch a transaction;
    then the same again from the start until none is left (a row another transaction
    held was skipped). Returns the rows rotated.

    Pipelined on two connections (``series``): while one batch's update runs on the
    server (on a thread of its own: the driver lets go of the GIL while it waits), the
    next batch is read, locked and re-encrypted here. A batch is written once the one
    before has committed, so the rotation's progress row (``rows_done``,
    ``last_user_id``) only ever moves past rows that are done."""
    from concurrent.futures import Future, ThreadPoolExecutor

    to = rotation.to_key_id
    done, rotated, batches = rotation.rows_done, 0, 0
    after = rotation.last_user_id or ""
    writing: Future[int] | None = None
    turn = 0
    broken: set[str] = set()  # passports that do not decrypt: left where they are

    def settle() -> None:
        """The batch being written, committed (or its error raised)."""
        nonlocal writing, done, rotated, batches
        if writing is None:
            return
        finished, writing = writing, None
        updated = finished.result()
        done, rotated, batches = done + updated, rotated + updated, batches + 1
        if progress is not None:
            progress(done, rotation.rows_total)
        if after_batch is not None:
            after_batch(batches)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnpl-rotate") as writer:
        try:
            while True:
                held = ExitStack()
                work = held.enter_context(series[turn % 2]())
                try:
                    rows = run(
                        work.dbapi, _BATCH, {"after": after, "to": to, "rows": batch_rows}
                    ).all()
                    batch = _encrypted(keyring, rows, broken) if rows else None
                    settle()
                except BaseException:
                    held.__exit__(*sys.exc_info())
                    raise
                if batch is None:
                    held.close()
                    with series[turn % 2]() as work:
                        left = run(work.dbapi, _LEFT, {"to": to}).scalar()
                    if left <= len(broken):
                        _stop_if_broken(broken, rotation)
                        return rotated
                    if not after:  # every row left is held by another transaction
                        time.sleep(RETRY_SECONDS)
                    after = ""  # skipped while held: once more from the start
                    continue
                after = str(rows[-1][0])
                if not batch.ids:  # every row of it broken
                    held.close()
                    continue
                writing = writer.submit(_write_batch, held, work.dbapi, batch, rotation.id, after)
                turn += 1
        finally:
            if writing is not None:  # stopped: let the batch in flight end as it will
                with contextlib.suppress(BaseException):
                    writing.result()


@dataclass(frozen=True)
class _Batch:
    to: int
    ids: list[str]
    sealed: list[bytes]
    indexes: list[str]
    was: list[bytes]


def _encrypted(keyring: crypto.Keyring, rows: list[Any], broken: set[str]) -> _Batch:
    """A batch's passports decrypted under the key each names and encrypted under the
    primary, bound to their rows, with their blind indexes; a passport that does not
    decrypt is left as it is, its user added to ``broken``."""
    batch = _Batch(keyring.primary_id, [], [], [], [])
    for user_id, blob in rows:
        blob = bytes(blob)
        try:
            passport = keyring.decrypt_passport(blob, user_id)
        except ConfigError:
            broken.add(str(user_id))
            continue
        batch.ids.append(user_id)
        batch.sealed.append(keyring.encrypt_passport(passport, user_id))
        batch.indexes.append(keyring.passport_index(passport))
        batch.was.append(blob)
    return batch


def _stop_if_broken(broken: set[str], rotation: Rotation) -> None:
    """Every other passport rotated: the ones that do not decrypt keep the rotation
    unfinished (69), named, with the way out."""
    if not broken:
        return
    named = sorted(broken)
    shown = ", ".join(named[:10]) + (" ..." if len(named) > 10 else "")
    raise RotationBroken(
        f"{len(named)} passport(s) cannot be decrypted under the key they name ({shown}):"
        f" every other passport is under key {rotation.to_key_id}; these stay under their"
        " key and the rotation unfinished. `bnplctl verify --keys` lists them all: restore"
        " their rows from a backup, then `bnplctl keys rotate --resume`"
    )


def _write_batch(held: ExitStack, dbapi: Any, batch: _Batch, rotation_id: int, after: str) -> int:
    """The batch's update and the rotation's progress, committed (``held``: its unit)."""
    with held:
        with dbapi.cursor() as cursor:
            cursor.execute(
                _UPDATE,
                {
                    "to": batch.to,
                    "ids": batch.ids,
                    "sealed": batch.sealed,
                    "index": batch.indexes,
                    "was": batch.was,
                },
            )
            updated = int(cursor.rowcount)
            cursor.execute(
                "UPDATE key_rotations SET rows_done = rows_done + %s, last_user_id = %s"
                " WHERE id = %s",
                (updated, after, rotation_id),
            )
    return updated


def _finish(executor: Executor, rotation: Rotation, *, actor: str, now: datetime) -> Rotation:
    row = run(
        executor,
        "UPDATE key_rotations SET finished_at = :now, rows_done = GREATEST(rows_done,"  # noqa: S608 - fixed column names
        " rows_total) WHERE id = :id RETURNING " + _ROTATION_COLUMNS,
        {"now": now, "id": rotation.id},
    ).one()
    closed = _rotation(row)
    assert closed is not None  # noqa: S101
    audit_key(
        executor,
        now,
        actor,
        "key.rotation_finished",
        rotation.to_key_id,
        rotation_id=rotation.id,
        from_key_id=rotation.from_key_id,
        rows=closed.rows_done,
    )
    return closed


# --- retire ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Retired:
    key_id: int
    card_fingerprints: int  # rows whose card fingerprint was made under it
    already: bool


def retire(
    database: Database, settings: Settings, key_id: int, *, actor: str, now: Callable[[], datetime]
) -> Retired:
    """``keys retire ID``: the key marked retired in the database and in the key file
    (used for nothing from then on). Refused (3) while it is the primary, an unfinished
    rotation's, or any passport is under it; 4 when neither knows it."""
    with _one_at_a_time(database) as next_unit:
        with next_unit() as work:
            executor = work.dbapi
            read = _key_file(settings)
            found = read.keys
            checked_keyring(executor, settings, now=now())
            run(executor, "SELECT pg_advisory_xact_lock(:id)", {"id": KEYS_LOCK_ID})
            stored = stored_keys(executor)
            known = stored.checks.get(key_id)
            entry = found.get(key_id)
            if known is None and entry is None:
                raise NotFound(f"key {key_id} is neither in the key file nor in the database")
            cards = int(
                run(
                    executor,
                    "SELECT count(*) FROM users WHERE card_key_id = :id",
                    {"id": key_id},
                ).scalar()
            )
            if (
                known is not None
                and known[1] == "retired"
                and (entry is None or entry.status == "retired")
            ):
                return Retired(key_id, cards, already=True)
            if key_id == stored.pending:
                raise Refused(
                    f"key {key_id} is being added by a rotation of this database that stopped"
                    " before it began: finish it (`bnplctl keys rotate --resume`)"
                )
            if known is None:
                raise Refused(
                    f"key {key_id} of the key file was never this database's (another database"
                    " sharing the file made it): retire it from that database"
                )
            if entry is not None and entry.primary and key_id != stored.primary:
                raise Refused(
                    f"key {key_id} is the key file's primary (another database sharing the"
                    " file writes under it): rotate that database first"
                )
            if key_id == stored.primary:
                raise Refused(
                    f"key {key_id} is the primary key: rotate to a new key first"
                    " (`bnplctl keys rotate`)"
                )
            rotation = unfinished(executor)
            if rotation is not None and key_id in (rotation.from_key_id, rotation.to_key_id):
                raise Refused(
                    f"key {key_id} is in the unfinished rotation {rotation.id}: finish it"
                    " first (`bnplctl keys rotate --resume`)"
                )
            passports = int(
                run(
                    executor,
                    "SELECT count(*) FROM users WHERE passport_key_id = :id",
                    {"id": key_id},
                ).scalar()
            )
            if passports:
                raise Refused(
                    f"key {key_id} is still needed: {passports} passport(s) are under it"
                    " (`bnplctl keys rotate` puts them under the primary key)"
                )
            run(
                executor,
                "UPDATE secret_keys SET status = 'retired', retired_at = :now WHERE key_id = :id",
                {"now": now(), "id": key_id},
            )
            audit_key(executor, now(), actor, "key.retired", key_id, card_fingerprints=cards)
            if entry is not None and entry.status != "retired":
                _write(read, found.with_retired(key_id))  # before the commit
    return Retired(key_id, cards, already=False)


# --- status ---------------------------------------------------------------------------


def key_report(
    executor: Executor,
    path: Path | None,
    *,
    max_age_days: int,
    now: datetime,
    counts: bool = True,
) -> dict[str, Any]:
    """``keys status``: the key file, every key (from the file and the database) with
    its age, its rows (passports, card fingerprints; without ``counts``, none), an
    unfinished rotation, and the problems that make ``status`` unhealthy (an over-age
    primary key, an unfinished rotation or one stopped before it began, passports under
    a key the file lacks, a key dated in the future, a key the database retired enabled
    in the file), after what is wrong with the file itself (also in ``file_problems``:
    unusable, or a key that is not the database's, which ``status`` says in its own
    words). Reads; never writes or creates."""
    stored = stored_keys(executor)
    problems: list[str] = []
    file_problems: list[str] = []
    file: dict[str, Any] = {"path": None if path is None else str(path)}
    found: crypto.KeyFile | None = None
    if path is not None:
        try:
            found = crypto.read_keyring(path)
        except ConfigError as exc:
            file["error"] = exc.message
            file_problems.append(exc.message)
        file |= _file_facts(path, found)
        if not file.get("exists") and stored.seen:
            file_problems.append(f"{VARIABLE}: {path} does not exist")
    # Counting reads every user: ``status`` (a health check) asks only whether a key the
    # file lacks still has passports.
    passports = _per_key(executor, "passport_key_id") if counts else {}
    cards = _per_key(executor, "card_key_id") if counts else {}
    if not counts and found is not None:
        for key_id in set(stored.checks) - {entry.key_id for entry in found.entries}:
            if run(
                executor,
                "SELECT EXISTS (SELECT FROM users WHERE passport_key_id = :id)",
                {"id": key_id},
            ).scalar():
                passports[key_id] = 1
    ids = sorted(set(stored.checks) | {entry.key_id for entry in (found.entries if found else ())})
    keys = []
    for key_id in ids:
        entry = found.get(key_id) if found else None
        known = stored.checks.get(key_id)
        # The database's date where it has one: it recorded the key, the file can be edited.
        made = stored.created.get(key_id) or (entry.created_at if entry else None)
        age = None if made is None else (now - made).days
        matches = None
        if entry is not None and known is not None:
            matches = crypto.SecretKey(entry.material, key_id).key_check() == known[0]
        # This database's say first: it decides what it uses (a file may be shared).
        status = (known[1] if known else None) or (entry.status if entry else "unknown")
        keys.append(
            {
                "key_id": key_id,
                "purpose": entry.purpose if entry else crypto.PURPOSE,
                "status": status,
                "primary": key_id == stored.primary,
                "in_file": entry is not None,
                "file_status": entry.status if entry else None,
                "in_database": known is not None,
                "matches": matches,
                "created_at": None if made is None else made.isoformat(),
                "age_days": age,
                "passports": passports.get(key_id, 0),
                "card_fingerprints": cards.get(key_id, 0),
            }
        )
        found_problems, found_file_problems = _key_problems(
            keys[-1],
            entry,
            known,
            stored,
            path=path,
            max_age_days=max_age_days,
            file_read=found is not None,
        )
        problems += found_problems
        file_problems += found_file_problems
    rotation = unfinished(executor)
    if rotation is not None:
        left = run(executor, _LEFT, {"to": rotation.to_key_id}).scalar()
        problems.append(
            f"a key rotation (key {rotation.from_key_id} to key {rotation.to_key_id}) is"
            f" unfinished, {left} passport(s) left: `bnplctl keys rotate --resume` (when it"
            " stops again on passports that cannot be decrypted, `bnplctl verify --keys`"
            " names them: restore their rows from a backup first)"
        )
    return {
        "file": file,
        "primary_key_id": stored.primary,
        "max_age_days": max_age_days,
        "keys": keys,
        "rotation": None if rotation is None else rotation.public(),
        "last_rotation": _public(last_rotation(executor)),
        "problems": file_problems + problems,
        "file_problems": file_problems,
    }


def _key_problems(
    key: dict[str, Any],
    entry: crypto.KeyEntry | None,
    known: tuple[str, str] | None,
    stored: StoredKeys,
    *,
    path: Path | None,
    max_age_days: int,
    file_read: bool,
) -> tuple[list[str], list[str]]:
    """What ``key_report`` says of one key: (problems, file problems)."""
    problems: list[str] = []
    file_problems: list[str] = []
    key_id, age, matches = key["key_id"], key["age_days"], key["matches"]
    passports = key["passports"]
    if matches is False:
        file_problems.append(f"key {key_id} of {path} is not the database's key {key_id}")
    if age is not None and age < 0:
        problems.append(f"key {key_id} is dated {-age} days in the future: check the clock")
    if known is not None and known[1] == "retired" and entry and entry.status == "enabled":
        problems.append(f"key {key_id} is retired in the database but enabled in the key file")
    if key_id == stored.pending:
        problems.append(
            f"a rotation of this database to key {key_id} stopped before it began:"
            " `bnplctl keys rotate --resume`"
        )
    in_use = passports or key_id in (stored.primary, stored.rotating_from)
    if known is not None and known[1] == "enabled" and entry and entry.status == "retired":
        if in_use:
            problems.append(
                f"key {key_id} is retired in the key file (by another database sharing it?)"
                " but this database still uses it: it goes on using it; `bnplctl keys"
                " rotate` here, then retire it here"
            )
    if key_id == stored.primary and age is not None and age > max_age_days:
        problems.append(
            f"key {key_id} (primary) is {age} days old, over BNPL_KEY_MAX_AGE_DAYS"
            f" ({max_age_days}): `bnplctl keys rotate`"
        )
    if passports and entry is None and file_read:
        problems.append(f"passports are under key {key_id}, which the key file lacks")
    return problems, file_problems


def _public(rotation: Rotation | None) -> dict[str, Any] | None:
    return None if rotation is None else rotation.public()


def _file_facts(path: Path, found: crypto.KeyFile | None) -> dict[str, Any]:
    import stat

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return {"exists": False}
    return {
        "exists": True,
        "format": None if found is None else ("single key" if found.legacy else "keyring"),
        "mode": f"{mode:04o}",
        "exposed": bool(mode & 0o077),
    }


def _per_key(executor: Executor, column: str) -> dict[int, int]:
    rows = run(
        executor,
        f"SELECT {column}, count(*) FROM users GROUP BY 1",  # noqa: S608 - fixed names
    ).all()
    return {int(row[0]): int(row[1]) for row in rows}


def summary(report: dict[str, Any]) -> str:
    """``status``'s one line of ``key_report``."""
    primary = report["primary_key_id"]
    if primary is None:
        return "no key yet"
    key = next((key for key in report["keys"] if key["key_id"] == primary), None)
    age = "" if key is None or key["age_days"] is None else f", {key['age_days']} days old"
    line = f"primary key {primary}{age} (max {report['max_age_days']})"
    rotation = report["rotation"]
    if rotation is not None:
        line += (
            f"; rotation to key {rotation['to_key_id']} unfinished"
            f" ({rotation['rows_done']} of {rotation['rows_total']} rows)"
        )
    return line


# --- verify --keys --------------------------------------------------------------------

VERIFY_BATCH = 10_000
_VERIFY_ALL = (
    "SELECT user_id, passport_ciphertext, passport_key_id, passport_blind_index FROM users"
)


def verify_keys(
    executor: Any, keyring: crypto.Keyring, *, sample: int | None = None
) -> dict[str, Any]:
    """Every passport (or a random ``sample``) checked: its ciphertext names a key of the
    ring that its row says (``passport_key_id``), decrypts under it for its own row (the
    binding), and its blind index is the passport's under that key. A check entry as
    ``verify`` shows them: ``passport_keys``, violations, up to 10 user ids."""
    query = _VERIFY_ALL if sample is None else _VERIFY_ALL + " ORDER BY random() LIMIT %(sample)s"
    bad: list[str] = []
    count = 0
    checked = 0
    with executor.cursor(name="verify_keys") as cursor:
        cursor.itersize = VERIFY_BATCH
        cursor.execute(
            query,
            {"sample": sample},
        )
        for user_id, blob, key_id, index in cursor:
            checked += 1
            if not _holds(keyring, str(user_id), bytes(blob), int(key_id), str(index)):
                count += 1
                if len(bad) < 10:
                    bad.append(str(user_id))
    return {"check": "passport_keys", "violations": count, "examples": bad, "rows": checked}


def _holds(keyring: crypto.Keyring, user_id: str, blob: bytes, key_id: int, index: str) -> bool:
    if crypto.ciphertext_key_id(blob) != key_id or key_id not in keyring.keys:
        return False
    key = keyring.keys[key_id]
    try:
        passport = key.decrypt_passport(blob, user_id)
    except ConfigError:
        return False
    return key.passport_index(passport) == index
