"""Onboarding and reading users. Personal data is protected before it reaches SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from bnplctl import clock, crypto
from bnplctl.errors import Conflict, NotFound
from bnplctl.models import User, UserStatus
from bnplctl.schemas import UserCreate, UserUpdate
from bnplctl.services import audit
from bnplctl.services.listing import ListRequest, Page, ordering, page
from bnplctl.services.onboarding import (
    InsertOutcome,
    copy_line,
    insert_staged,
    new_user_id,
    protected_values,
)
from bnplctl.services.user_summary import USER_FIELDS, public_user_values
from bnplctl.sorting import USER_SORT
from bnplctl.validators import user_not_found

if TYPE_CHECKING:
    from bnplctl.config import Settings


@dataclass(frozen=True)
class ProtectedUser:
    """A user ready for insert: no raw card or passport number left in it."""

    line: int
    values: tuple[Any, ...]

    @property
    def user_id(self) -> str:
        return str(self.values[0])


def protect(user: UserCreate, keyring: crypto.Keyring, line: int = 0) -> ProtectedUser:
    """Encrypt the passport, fingerprint the card, and drop both raw values."""
    user_id = user.user_id or new_user_id()
    values = protected_values(
        user_id, user.name, user.phone, user.passport, user.card, user.dob, keyring
    )
    return ProtectedUser(line=line, values=values)


def copy_rows(users: Sequence[ProtectedUser]) -> str:
    """The users as COPY CSV for the staging table."""
    return "".join(copy_line(seq, user.values) for seq, user in enumerate(users))


def staged_keys(users: Sequence[ProtectedUser]) -> list[tuple[int, str, str]]:
    """(line, user_id, passport blind index) of each staged row, in order."""
    return [(user.line, user.user_id, str(user.values[4])) for user in users]


def insert_users(
    session: Session, users: Sequence[ProtectedUser], *, actor: str, source: str
) -> list[InsertOutcome]:
    """Insert protected users; one outcome per user, in order (see ``insert_staged``)."""
    keys = staged_keys(users)
    staged = insert_staged(
        session.connection(), copy_rows(users), keys, actor=actor, source=source, now=clock.now()
    )
    duplicates = {outcome.line: outcome for outcome in staged}
    return [duplicates.get(line) or InsertOutcome(line, user_id, True) for line, user_id, _ in keys]


def onboard(
    session: Session,
    user: UserCreate,
    *,
    settings: Settings,
    actor: str,
    warn: Callable[[str], None] | None = None,
) -> User:
    """Onboard one user; a duplicate user_id or passport is a conflict (exit 3). The key
    is checked against the database first (``services/secret_key.py``)."""
    from bnplctl.services.secret_key import checked_keyring

    protected = protect(user, checked_keyring(session, settings, warn=warn), line=1)
    (outcome,) = insert_users(session, [protected], actor=actor, source="add")
    if not outcome.created:
        raise Conflict(outcome.reason or "duplicate")
    return get_user(session, outcome.user_id)


def update_user(
    session: Session, user_id: str, change: UserUpdate, *, actor: str
) -> tuple[User, list[str]]:
    """Change a user's name or phone (validated as at onboarding), under the user's row
    lock; returns the user and the fields changed. Audited with the names of the fields
    changed, never their values; a value the same as before is no change."""
    from bnplctl import clock
    from bnplctl.services import locks

    if not locks.for_user_writes(session, [user_id]):
        raise NotFound(user_not_found(user_id))
    user = get_user(session, user_id)
    changed = []
    if change.name is not None and change.name != user.full_name:
        user.full_name = change.name
        changed.append("full_name")
    new_phone = change.phone if change.phone != user.phone_e164 else None
    if new_phone is not None:
        changed.append("phone_number")
    if changed:
        now = clock.now()
        user.updated_at = now
        session.add(user)
        if new_phone is not None:
            session.flush()  # the name and updated_at first, then the phone beside the ORM
            _write_phone(session, user_id, new_phone)
            session.expire(user, ["phone_e164"])
        audit.record(
            session,
            actor=actor,
            action="user.updated",
            entity="user",
            entity_id=user_id,
            user_id=user_id,
            details={"fields": changed},
            occurred_at=now,
        )
        session.flush()
    return user, changed


# The phone goes through COPY, as at onboarding: a value bound by psycopg2 is spelled out
# in the statement's text, which a server with log_statement = 'all' (or 'mod') writes to
# its log; COPY's rows never reach that log.
_PHONE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS user_phone (phone_e164 text) ON COMMIT DROP"
_PHONE_UPDATE = """
    UPDATE users
       SET phone_e164 = (SELECT phone_e164 FROM user_phone)
     WHERE user_id = %(user_id)s
"""


def _write_phone(session: Session, user_id: str, phone_e164: str) -> None:
    """Set a user's phone (E.164, validated) without its digits in any statement's text."""
    import io

    from bnplctl.db import dbapi_connection

    with dbapi_connection(session).cursor() as cursor:
        cursor.execute(_PHONE_STAGE)
        cursor.execute("TRUNCATE user_phone")
        cursor.copy_expert("COPY user_phone FROM STDIN", io.StringIO(phone_e164 + "\n"))
        cursor.execute(_PHONE_UPDATE, {"user_id": user_id})


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(user_not_found(user_id))
    return user


def list_users(
    session: Session,
    *,
    status: UserStatus | None = None,
    search: str | None = None,
    cards: dict[int, str] | None = None,
    request: ListRequest = ListRequest(),  # noqa: B008 (frozen)
) -> Page[User]:
    """Oldest first unless sorted, fetched in batches (an export of every user takes flat
    memory). ``search`` matches a user id prefix, a name substring (any case) or, four
    digits, the end of the phone number; ``cards``, a card's fingerprint under each key
    (key id -> fingerprint): the users whose card fingerprint, under the key it was made
    with, is one of them."""
    query = select(User)
    if cards is not None:
        query = query.where(
            or_(
                *(
                    (col(User.card_key_id) == key_id) & (col(User.card_fingerprint) == print_)
                    for key_id, print_ in cards.items()
                )
            )
        )
    if status is not None:
        query = query.where(User.status == status.value)
    if search is not None and search.strip():
        text = search.strip()
        matches = [
            col(User.user_id).startswith(text, autoescape=True),
            col(User.full_name).icontains(text, autoescape=True),
        ]
        if text.isdigit() and len(text) == 4:
            matches.append(col(User.phone_e164).endswith(text))
        query = query.where(or_(*matches))
    fields = {name: col(getattr(User, name)) for name in USER_SORT}
    default = [col(User.created_at), col(User.user_id)]
    order = ordering(request.sort, fields, default, col(User.user_id))
    return page(session, query.order_by(*order), request)


def public_user(user: User) -> dict[str, Any]:
    """The user as every output shows it: phone, passport and card masked."""
    return public_user_values({name: getattr(user, name) for name in USER_FIELDS})
