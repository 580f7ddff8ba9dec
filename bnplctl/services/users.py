"""Onboarding and reading users. Personal data is protected before it reaches SQL."""

from __future__ import annotations

import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from bnplctl import pii
from bnplctl.errors import Conflict, NotFound
from bnplctl.models import Installment, InstallmentStatus, Plan, PlanStatus, User, UserStatus
from bnplctl.schemas import UserCreate

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
)
DUPLICATE_USER_ID = "user_id already exists"
DUPLICATE_PASSPORT = "passport already onboarded for another user"


@dataclass(frozen=True)
class ProtectedUser:
    """A user ready for insert: no raw card or passport number left in it."""

    line: int
    values: tuple[Any, ...]

    @property
    def user_id(self) -> str:
        return str(self.values[0])


@dataclass(frozen=True)
class InsertOutcome:
    line: int
    user_id: str
    created: bool
    reason: str | None = None


def new_user_id() -> str:
    return f"usr-{secrets.token_hex(5)}"


def protect(user: UserCreate, keyring: pii.Keyring, line: int = 0) -> ProtectedUser:
    """Encrypt the passport, fingerprint the card, and drop both raw values."""
    user_id = user.user_id or new_user_id()
    values = protected_values(
        user_id, user.name, user.phone, user.passport, user.card, user.dob, keyring
    )
    return ProtectedUser(line=line, values=values)


def protected_values(
    user_id: str,
    name: str,
    phone: str,
    passport: str,
    card: str,
    dob: date,
    keyring: pii.Keyring,
) -> tuple[Any, ...]:
    """A validated user's row values (``_INSERT_COLUMNS``): the passport encrypted and
    blind-indexed, the card reduced to brand, first six, last four and fingerprint."""
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
    )


_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS user_rows (line integer,"
    " user_id text, full_name text, phone_e164 text, passport_ciphertext bytea,"
    " passport_blind_index text, passport_masked text, card_brand text, card_first6 text,"
    " card_last4 text, card_fingerprint text, date_of_birth date) ON COMMIT DELETE ROWS"
)
# Only constant column names are formatted in; every value arrives through COPY or
# as a parameter. Rows are taken in line order, so within a chunk the first one wins.
_INSERT_SQL = (  # noqa: S608
    "WITH inserted AS ("
    " INSERT INTO users ({columns})"
    " SELECT {columns} FROM user_rows ORDER BY line"
    " ON CONFLICT DO NOTHING"
    " RETURNING user_id, passport_blind_index"
    "), audited AS ("
    " INSERT INTO audit_events (actor, action, entity, entity_id, user_id, details)"
    " SELECT %(actor)s, 'user.created', 'user', user_id, user_id,"
    "  jsonb_build_object('source', CAST(%(source)s AS text)) FROM inserted"
    ") SELECT user_id, passport_blind_index FROM inserted"
).format(columns=", ".join(_INSERT_COLUMNS))


def copy_line(line: int, values: tuple[Any, ...]) -> str:
    """One user as a COPY CSV line for the staging table (no raw card or passport in it).

    Formatted by hand for speed: every field but the name comes from a validated,
    comma- and quote-free alphabet (ids, digits, hex, masks, ISO dates); the name is
    always quoted, its quotes doubled.
    """
    (user_id, name, phone, sealed, index, masked, brand, first6, last4, fingerprint, dob) = values
    quoted = name.replace('"', '""')
    return (
        f'{line},{user_id},"{quoted}",{phone},\\x{sealed.hex()},{index},{masked},'
        f"{brand},{first6},{last4},{fingerprint},{dob.isoformat()}\n"
    )


def copy_rows(users: Sequence[ProtectedUser]) -> str:
    """The users as COPY CSV for the staging table."""
    return "".join(copy_line(user.line, user.values) for user in users)


def staged_keys(users: Sequence[ProtectedUser]) -> list[tuple[int, str, str]]:
    """(line, user_id, passport blind index) of each staged row, in order."""
    return [(user.line, user.user_id, str(user.values[4])) for user in users]


def insert_users(
    session: Session, users: Sequence[ProtectedUser], *, actor: str, source: str
) -> list[InsertOutcome]:
    """Insert protected users; see ``insert_staged``."""
    return insert_staged(session, copy_rows(users), staged_keys(users), actor=actor, source=source)


def insert_staged(
    session: Session,
    copy_text: str,
    keys: Sequence[tuple[int, str, str]],
    *,
    actor: str,
    source: str,
) -> list[InsertOutcome]:
    """COPY the rows to a staging table, then one statement inserts them and writes their
    audit events; a row whose user_id or passport exists is a duplicate."""
    if not keys:
        return []
    connection = session.connection().connection.driver_connection
    assert connection is not None  # noqa: S101 - a live session always has one
    with connection.cursor() as cursor:
        cursor.execute(_STAGE)
        cursor.execute("TRUNCATE user_rows")
        cursor.copy_expert("COPY user_rows FROM STDIN WITH (FORMAT csv)", io.StringIO(copy_text))
        cursor.execute(_INSERT_SQL, {"actor": actor, "source": source})
        inserted = {(row[0], row[1]) for row in cursor.fetchall()}
        created: set[int] = set()
        for line, user_id, blind_index in keys:  # the first row of an inserted pair
            if (user_id, blind_index) in inserted:
                inserted.discard((user_id, blind_index))
                created.add(line)
        rejected_ids = [user_id for line, user_id, _ in keys if line not in created]
        existing_ids: set[str] = set()
        if rejected_ids:
            cursor.execute("SELECT user_id FROM users WHERE user_id = ANY(%s)", (rejected_ids,))
            existing_ids = {row[0] for row in cursor.fetchall()}
    return [
        InsertOutcome(line, user_id, True)
        if line in created
        else InsertOutcome(
            line,
            user_id,
            False,
            DUPLICATE_USER_ID if user_id in existing_ids else DUPLICATE_PASSPORT,
        )
        for line, user_id, _ in keys
    ]


def onboard(session: Session, user: UserCreate, *, actor: str) -> User:
    """Onboard one user; a duplicate user_id or passport is a conflict (exit 3)."""
    protected = protect(user, pii.get_keyring(), line=1)
    (outcome,) = insert_users(session, [protected], actor=actor, source="add")
    if not outcome.created:
        raise Conflict(f"user {outcome.user_id}: {outcome.reason}")
    return get_user(session, outcome.user_id)


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def list_users(session: Session, *, status: UserStatus | None, limit: int) -> list[User]:
    query = select(User)
    if status is not None:
        query = query.where(User.status == status.value)
    query = query.order_by(col(User.created_at), col(User.user_id)).limit(limit)
    return list(session.exec(query).all())


def public_user(user: User) -> dict[str, Any]:
    """The user as every output shows it: phone, passport and card masked."""
    return {
        "user_id": user.user_id,
        "full_name": user.full_name,
        "phone_number": pii.mask_phone(user.phone_e164),
        "passport_number": user.passport_masked,
        "card_number": pii.mask_card(user.card_first6, user.card_last4),
        "card_brand": user.card_brand,
        "date_of_birth": user.date_of_birth.isoformat(),
        "status": user.status,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def user_summary(session: Session, user_id: str) -> dict[str, Any]:
    """One user with counts of their plans and what they owe."""
    from bnplctl.money import format_amount

    user = get_user(session, user_id)
    plan_counts = dict(
        session.exec(
            select(Plan.status, func.count())
            .where(Plan.user_id == user_id)
            .group_by(col(Plan.status))
        ).all()
    )
    is_overdue = col(Installment.status) == InstallmentStatus.OVERDUE.value
    outstanding, overdue_amount, overdue_count = session.exec(
        select(
            func.coalesce(func.sum(Installment.amount_due), 0),
            func.coalesce(func.sum(Installment.amount_due).filter(is_overdue), 0),
            func.count().filter(is_overdue),
        ).where(
            Installment.user_id == user_id,
            Installment.status != InstallmentStatus.PAID.value,
        )
    ).one()
    return public_user(user) | {
        "plans_active": int(plan_counts.get(PlanStatus.ACTIVE.value, 0)),
        "plans_completed": int(plan_counts.get(PlanStatus.COMPLETED.value, 0)),
        "outstanding_amount": format_amount(Decimal(outstanding)),
        "total_debt": format_amount(Decimal(overdue_amount)),
        "overdue_installments": int(overdue_count),
    }
