"""Onboarding's writes (users, a command or a file alike): a validated user protected
(the passport encrypted and blind-indexed, the card reduced to brand, first six, last
four and fingerprint), staged with COPY and inserted with its audit event by one
statement, whose conflicts say which rows were duplicates.

Plain SQL on a DB-API connection, no ORM and no models: the batch import's inserter
loads nothing more than it needs.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from bnplctl import pii
from bnplctl.services.audit import insert_events

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Connection

    from bnplctl.crypto import Keyring
    from bnplctl.db import DbapiConnection


def new_user_id() -> str:
    return f"usr-{secrets.token_hex(5)}"


def protected_values(
    user_id: str,
    name: str,
    phone: str,
    passport: str,
    card: str,
    dob: date,
    keyring: Keyring,
) -> tuple[Any, ...]:
    """A validated user's row values (``_INSERT_COLUMNS``, then the passport's blind
    index under an unfinished rotation's prior key, for the lookup only): the passport
    encrypted and blind-indexed, the card reduced to brand, first six, last four and
    fingerprint, each under the keyring's primary key."""
    return (
        user_id,
        name,
        phone,
        keyring.encrypt_passport(passport, user_id),
        keyring.passport_index(passport),
        pii.mask_passport(passport),
        pii.card_brand(card),
        card[:6],
        card[-4:],
        keyring.card_fingerprint(card),
        dob,
        keyring.primary_id,
        keyring.primary_id,
        keyring.prior_index(passport),
    )


def copy_line(seq: int, values: tuple[Any, ...]) -> str:
    """One user as a COPY CSV line for the staging table (no raw card or passport in it);
    ``seq`` is the row's place in its chunk, the order in which rows are inserted.

    Formatted by hand for speed: every field but the name comes from a validated,
    comma- and quote-free alphabet (ids, digits, hex, masks, ISO dates); the name is
    always quoted, its quotes doubled.
    """
    (user_id, name, phone, sealed, index, masked, brand, first6, last4, fingerprint, dob) = values[
        :11
    ]
    passport_key, card_key, prior = values[11:]
    quoted = name.replace('"', '""')
    return (
        f'{seq},{user_id},"{quoted}",{phone},\\x{sealed.hex()},{index},{masked},'
        f"{brand},{first6},{last4},{fingerprint},{dob.isoformat()},{passport_key},{card_key},"
        f"{prior or ''}\n"
    )


# --- the staging table and the insert ------------------------------------------------------

_INSERT_COLUMNS = (
    "user_id",
    "full_name",
    "phone_e164",
    "passport_ciphertext",
    "passport_blind_index",
    "passport_masked",
    "card_brand",
    "card_first6",
    "card_last4",
    "card_fingerprint",
    "date_of_birth",
    "passport_key_id",
    "card_key_id",
)


def duplicate_reason(
    same: str, *, user_id: str | None = None, line: int | None = None, file: str | None = None
) -> str:
    """Why a row is a duplicate, naming what it duplicates: an earlier ``line`` of the
    same file (of ``file``, when it was another file of the run), else the stored user
    (``same``: the field they share). Never a value of a personal field."""
    if line is not None:
        where = f"{file} line {line}" if file is not None else f"line {line}"
        return f"duplicate of {where} (same {same})"
    if user_id is not None:
        return f"duplicate of user {user_id} (same {same})"
    return f"duplicate of another user (same {same})"


@dataclass(frozen=True)
class InsertOutcome:
    line: int
    user_id: str
    created: bool
    reason: str | None = None
    seq: int = -1  # the row's place in its chunk
    duplicate_of: str | None = None  # the stored user it duplicates
    same: str | None = None  # the field it shares with that user: user_id or passport


_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS user_rows (seq integer,"
    " user_id text, full_name text, phone_e164 text, passport_ciphertext bytea,"
    " passport_blind_index text, passport_masked text, card_brand text, card_first6 text,"
    " card_last4 text, card_fingerprint text, date_of_birth date, passport_key_id smallint,"
    " card_key_id smallint, prior_index text) ON COMMIT DELETE ROWS"
)
# Only constant column names are formatted in; every value arrives through COPY or
# as a parameter. Rows are taken in file order (``seq``: a row's place in its chunk; not
# the line, which rows of a JSON array written on one line share), so the first one wins.
# While a rotation is unfinished a row has a ``prior_index`` (its passport's blind index
# under the key rotated from): a passport stored under either key is a duplicate.
_STAGED_ROWS = (
    " SELECT {columns} FROM user_rows r WHERE r.prior_index IS NULL OR NOT EXISTS"
    "  (SELECT FROM users u WHERE u.passport_blind_index = r.prior_index)"
    " ORDER BY seq"
)
_INSERT_SQL = (
    "WITH inserted AS ("  # noqa: S608 - fixed fragments, no input
    " INSERT INTO users ({columns})" + _STAGED_ROWS + " ON CONFLICT DO NOTHING"
    " RETURNING user_id, passport_blind_index"
    "), audited AS ("
    + insert_events(
        " SELECT %(now)s, %(actor)s, 'user.created', 'user', user_id, user_id,"
        "  jsonb_build_object('source', CAST(%(source)s AS text)) FROM inserted"
    )
    + ") SELECT user_id, passport_blind_index FROM inserted"
).format(columns=", ".join(_INSERT_COLUMNS))
# The same for a chunk expected to hold only new users: a plain INSERT (no speculative
# insertion), which fails as a whole on the first duplicate (under the prior key: a row
# left out, found by the count of audit events).
_INSERT_NEW_SQL = (
    "WITH inserted AS ("  # noqa: S608 - fixed fragments, no input
    " INSERT INTO users ({columns})" + _STAGED_ROWS + " RETURNING user_id"
    ") "
    + insert_events(
        " SELECT %(now)s, %(actor)s, 'user.created', 'user', user_id, user_id,"
        "  jsonb_build_object('source', CAST(%(source)s AS text)) FROM inserted"
    )
).format(columns=", ".join(_INSERT_COLUMNS))


def rekey_staged(
    connection: Any,
    keyring: Keyring,
    keys: Sequence[tuple[int, str, str]],
    *,
    reader: Keyring | None = None,
) -> list[tuple[int, str, str]]:
    """The staged users (``copy_staged``) put under ``keyring``'s primary key and given
    their blind index under its prior one: a chunk protected before a rotation started
    (or finished), read back, decrypted under the key it names and protected again, its
    card fingerprint left under the key it was made with (the number is not kept).
    Returns ``keys`` with each row's new blind index; ``reader`` decrypts (default: the
    keyring)."""
    from bnplctl.db import dbapi_connection

    reader = reader or keyring

    dbapi = dbapi_connection(connection)
    with dbapi.cursor() as cursor:
        cursor.execute("SELECT seq, user_id, passport_ciphertext FROM user_rows ORDER BY seq")
        staged = cursor.fetchall()
        seqs, sealed, indexes, priors = [], [], [], []
        for seq, user_id, blob in staged:
            passport = reader.decrypt_passport(bytes(blob), user_id)
            seqs.append(seq)
            sealed.append(keyring.encrypt_passport(passport, user_id))
            indexes.append(keyring.passport_index(passport))
            priors.append(keyring.prior_index(passport))
        cursor.execute(
            "UPDATE user_rows SET passport_ciphertext = v.sealed,"
            " passport_blind_index = v.index, prior_index = v.prior, passport_key_id = %s"
            " FROM unnest(%s::integer[], %s::bytea[], %s::text[], %s::text[])"
            " AS v (seq, sealed, index, prior) WHERE user_rows.seq = v.seq",
            (keyring.primary_id, seqs, sealed, indexes, priors),
        )
    index_of = dict(zip(seqs, indexes, strict=True))
    return [(line, user_id, index_of[seq]) for seq, (line, user_id, _) in enumerate(keys)]


class _PriorDuplicate(Exception):
    """A chunk expected new held a passport stored under an unfinished rotation's prior
    key: rolled back to its savepoint, it takes the general path."""


def insert_staged(
    connection: Connection,
    copy_text: str,
    keys: Sequence[tuple[int, str, str]],
    *,
    actor: str,
    source: str,
    now: datetime,
    expect_new: bool = False,
) -> list[InsertOutcome]:
    """COPY the rows to a staging table (``copy_staged``), then insert them and write
    their audit events (``insert_copied``), in the caller's unit of work."""
    if not keys:
        return []
    copy_staged(connection, copy_text)
    return insert_copied(
        connection, keys, actor=actor, source=source, now=now, expect_new=expect_new
    )


def copy_staged(connection: Connection | DbapiConnection, copy_text: str) -> None:
    """COPY users (``copy_line``s) into this connection's staging table, which holds
    them until the transaction ends: a batch copies a chunk in while the chunk before is
    inserted on another connection. ``connection``: the caller's unit of work, a
    SQLAlchemy connection or a batch unit's bare psycopg2 one (which does the COPY)."""
    from bnplctl.db import dbapi_connection

    dbapi = dbapi_connection(connection)
    # Bytes, not a StringIO: a StringIO holds its text four bytes a character.
    copied = io.BytesIO(copy_text.encode())
    with dbapi.cursor() as cursor:
        cursor.execute(_STAGE)
        cursor.execute("TRUNCATE user_rows")
        cursor.copy_expert("COPY user_rows FROM STDIN WITH (FORMAT csv)", copied, size=1 << 20)


def insert_copied(
    connection: Connection | DbapiConnection,
    keys: Sequence[tuple[int, str, str]],
    *,
    actor: str,
    source: str,
    now: datetime,
    expect_new: bool = False,
) -> list[InsertOutcome]:
    """One statement inserts the staged users (``copy_staged``) and writes their audit
    events. ``keys`` holds each row's (line, user_id, passport blind index), in the
    order of the rows' ``seq``. Returns the rows not created, each naming the stored
    user it duplicates: a row whose user_id or passport exists (or came earlier in the
    chunk) is a duplicate; every other row was created.

    ``expect_new`` first tries a plain INSERT, about 15 % cheaper for the server than
    ``ON CONFLICT DO NOTHING``; a duplicate anywhere in the chunk undoes it (to a
    savepoint) and the chunk takes the general path.
    """
    from psycopg2.errors import UniqueViolation

    if not keys:
        return []
    params = {"actor": actor, "source": source, "now": now}
    from bnplctl.db import dbapi_connection

    dbapi = dbapi_connection(connection)
    with dbapi.cursor() as cursor:
        if expect_new:
            from bnplctl.db import savepoint

            try:
                with savepoint(connection):  # rolled back to on a duplicate
                    cursor.execute(_INSERT_NEW_SQL, params)
                    if cursor.rowcount != len(keys):  # one under the prior key
                        raise _PriorDuplicate
            except (UniqueViolation, _PriorDuplicate):
                pass
            else:
                return []
        cursor.execute(_INSERT_SQL, params)
        inserted = {(row[0], row[1]) for row in cursor.fetchall()}
        created: set[int] = set()
        for seq, (_, user_id, blind_index) in enumerate(keys):  # first row of a pair
            if (user_id, blind_index) in inserted:
                inserted.discard((user_id, blind_index))
                created.add(seq)
        rejected = [(seq, key) for seq, key in enumerate(keys) if seq not in created]
        if not rejected:
            return []
        # One query per chunk with duplicates: the stored user each of them duplicates.
        cursor.execute(
            "SELECT user_id, passport_blind_index FROM users"
            " WHERE user_id = ANY(%s) OR passport_blind_index = ANY(%s)",
            ([key[1] for _, key in rejected], [key[2] for _, key in rejected]),
        )
        stored = cursor.fetchall()
        # Under an unfinished rotation: a row's passport stored under the prior key,
        # found by the row's prior index and named by the row's own.
        cursor.execute(
            "SELECT r.passport_blind_index, u.user_id FROM user_rows r"
            " JOIN users u ON u.passport_blind_index = r.prior_index WHERE r.seq = ANY(%s)",
            ([seq for seq, _ in rejected],),
        )
        under_prior = cursor.fetchall()
    by_id = {row[0] for row in stored}
    by_passport = {row[1]: row[0] for row in stored} | {row[0]: row[1] for row in under_prior}
    outcomes = []
    for seq, (line, user_id, blind_index) in rejected:
        existing: str | None = user_id
        if user_id in by_id:
            same = "user_id"
        else:
            same, existing = "passport", by_passport.get(blind_index)
        reason = duplicate_reason(same, user_id=existing)
        outcomes.append(InsertOutcome(line, user_id, False, reason, seq, existing, same))
    return outcomes
