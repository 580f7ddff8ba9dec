"""SQLModel tables: the whole schema. Alembic revisions must match these exactly.

Every table that belongs to a user carries ``user_id`` (installments and refunds
too), so the sweep marks users without a join and the schema can be distributed
by ``user_id`` later.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB
from sqlmodel import Field, SQLModel

from bnplctl.statuses import FileKind as FileKind  # the one list of each
from bnplctl.statuses import InstallmentStatus as InstallmentStatus
from bnplctl.statuses import PlanStatus as PlanStatus
from bnplctl.statuses import RefundStatus as RefundStatus
from bnplctl.statuses import SweepOutcome as SweepOutcome
from bnplctl.statuses import UserStatus as UserStatus

MONEY = Numeric(12, 2)

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: type[StrEnum]) -> str:
    listed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({listed})"


def _created_at() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _id_column() -> Any:
    return Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("status", UserStatus), name="status"),
        CheckConstraint("phone_e164 ~ '^\\+[1-9][0-9]{6,14}$'", name="phone_e164"),
        CheckConstraint("card_first6 ~ '^[0-9]{6}$' AND card_last4 ~ '^[0-9]{4}$'", name="card"),
        UniqueConstraint("passport_blind_index"),
    )

    user_id: str = Field(sa_column=Column(String(64), primary_key=True))
    full_name: str = Field(sa_column=Column(String(200), nullable=False))
    phone_e164: str = Field(sa_column=Column(String(16), nullable=False))
    passport_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Hex digests, compared only for equality: byte order ("C"), not the locale's.
    passport_blind_index: str = Field(sa_column=Column(String(64, collation="C"), nullable=False))
    passport_masked: str = Field(sa_column=Column(String(20), nullable=False))
    card_brand: str = Field(sa_column=Column(String(20), nullable=False))
    card_first6: str = Field(sa_column=Column(String(6), nullable=False))
    card_last4: str = Field(sa_column=Column(String(4), nullable=False))
    card_fingerprint: str = Field(sa_column=Column(String(64, collation="C"), nullable=False))
    date_of_birth: date
    # The keyring's key the passport (ciphertext and blind index) is under, and the one
    # the card fingerprint was made with (revision 0011; ``services/keys.py``).
    passport_key_id: int = Field(
        default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0")
    )
    card_key_id: int = Field(
        default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0")
    )
    status: str = Field(
        default=UserStatus.NORMAL.value,
        sa_column=Column(String(16), nullable=False, server_default=UserStatus.NORMAL.value),
    )
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _created_at()


class Plan(SQLModel, table=True):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint(_one_of("status", PlanStatus), name="status"),
        CheckConstraint("total_amount > 0", name="total_amount_positive"),
        CheckConstraint("installment_count BETWEEN 1 AND 24", name="installment_count"),
        Index(None, "user_id", "status"),
    )

    id: int | None = _id_column()
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    total_amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    installment_count: int = Field(sa_column=Column(SmallInteger, nullable=False))
    start_date: date
    merchant_reference: str | None = Field(default=None, sa_column=Column(String(100)))
    status: str = Field(
        default=PlanStatus.ACTIVE.value,
        sa_column=Column(String(16), nullable=False, server_default=PlanStatus.ACTIVE.value),
    )
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _created_at()


class Installment(SQLModel, table=True):
    # Migration 0003 keeps 15 % of each page free: a refund's cut (rule 7) changes only
    # ``amount_due``, no indexed column, and its new row version then stays on the page.
    __tablename__ = "installments"
    __table_args__ = (
        CheckConstraint(_one_of("status", InstallmentStatus), name="status"),
        CheckConstraint("original_amount > 0", name="original_amount_positive"),
        # Payments (rule 10) and refunds (rule 7) lower what is due; at zero it is PAID.
        CheckConstraint("amount_due >= 0", name="amount_due_nonnegative"),
        CheckConstraint("(status = 'PAID') = (amount_due = 0)", name="paid_when_nothing_due"),
        # Rule 3: an installment remembers the business date it became OVERDUE on.
        CheckConstraint("status <> 'OVERDUE' OR overdue_since IS NOT NULL", name="overdue_since"),
        CheckConstraint("amount_due <= original_amount", name="amount_due_le_original"),
        CheckConstraint("(status = 'PAID') = (paid_at IS NOT NULL)", name="paid_at"),
        UniqueConstraint("plan_id", "sequence"),  # also serves every lookup by plan
        Index(
            "ix_installments_due_date_upcoming",
            "due_date",
            postgresql_where=text("status = 'UPCOMING'"),
        ),
        Index(
            "ix_installments_user_id_overdue",
            "user_id",
            postgresql_where=text("status = 'OVERDUE'"),
        ),
    )

    id: int | None = _id_column()
    plan_id: int = Field(sa_column=Column(BigInteger, ForeignKey("plans.id"), nullable=False))
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    sequence: int = Field(sa_column=Column(SmallInteger, nullable=False))
    original_amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    amount_due: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    due_date: date
    status: str = Field(
        default=InstallmentStatus.UPCOMING.value,
        sa_column=Column(
            String(16), nullable=False, server_default=InstallmentStatus.UPCOMING.value
        ),
    )
    paid_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Written by the sweep's marking statement (rule 3); kept once PAID (the history
    # ``debt explain`` tells), cleared when a revert (rule 11) makes it UPCOMING again.
    # No foreign key to ``sweep_runs``: the sweep writes it on every row it marks, and a
    # run is never deleted.
    overdue_since: date | None = Field(default=None)
    overdue_run_id: int | None = Field(default=None, sa_column=Column(BigInteger))


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint(_one_of("status", RefundStatus), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "applied_amount IS NULL OR applied_amount >= 0", name="applied_amount_nonnegative"
        ),
        CheckConstraint(
            "payout_amount IS NULL OR payout_amount >= 0", name="payout_amount_nonnegative"
        ),
        UniqueConstraint("transaction_id"),
        # No index names the status, which every refund changes at least once: the update
        # then writes no index entry (a HOT update; migration 0003 keeps half of each page
        # free for the new row version).
        Index(None, "user_id"),
        Index(None, "plan_id"),
    )

    id: int | None = _id_column()
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    plan_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("plans.id"), nullable=True)
    )
    transaction_id: str = Field(sa_column=Column(String(100), nullable=False))
    merchant_reference: str | None = Field(default=None, sa_column=Column(String(100)))
    amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))  # given at creation
    # The --reason of approve, reject or cancel (a webhook's decision: NULL).
    decision_reason: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(
        default=RefundStatus.PENDING.value,
        sa_column=Column(String(16), nullable=False, server_default=RefundStatus.PENDING.value),
    )
    applied_amount: Decimal | None = Field(default=None, sa_column=Column(MONEY))
    payout_amount: Decimal | None = Field(default=None, sa_column=Column(MONEY))
    last_event_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    processed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _created_at()


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "expires_at"),)

    key: str = Field(sa_column=Column(String(200), primary_key=True))
    command: str = Field(sa_column=Column(String(50), nullable=False))
    request_fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    # json, not jsonb: a replay prints the stored result with its keys in the original order.
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime | None = _created_at()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class KeyCheck(SQLModel, table=True):
    """The database's one record of the secret key: a keyed HMAC of a fixed label, never
    the key (``services/secret_key.py``)."""

    __tablename__ = "key_checks"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: int = Field(default=1, sa_column=Column(SmallInteger, primary_key=True))
    key_check: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime | None = _created_at()
    # The key new passports are written under (revision 0011).
    primary_key_id: int = Field(
        default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0")
    )
    # A key a rotation of this database is adding: set before the key file is written,
    # cleared when the key is recorded (revision 0011).
    pending_key_id: int | None = Field(default=None, sa_column=Column(SmallInteger))


class SecretKey(SQLModel, table=True):
    """A check of each key of the keyring the database has seen (never the key), and
    whether it is enabled or retired (``services/keys.py``)."""

    __tablename__ = "secret_keys"
    __table_args__ = (
        CheckConstraint("key_id >= 0", name="key_id"),
        CheckConstraint("status IN ('enabled', 'retired')", name="status"),
    )

    key_id: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    key_check: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(
        default="enabled", sa_column=Column(String(16), nullable=False, server_default="enabled")
    )
    created_at: datetime | None = _created_at()
    retired_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class KeyRotation(SQLModel, table=True):
    """One ``keys rotate``: from which key to which, its progress, when it finished; at
    most one is unfinished."""

    __tablename__ = "key_rotations"
    __table_args__ = (
        Index(
            "ix_key_rotations_unfinished",
            text("(true)"),
            unique=True,
            postgresql_where=text("finished_at IS NULL"),
        ),
    )

    id: int | None = _id_column()
    from_key_id: int = Field(
        sa_column=Column(SmallInteger, ForeignKey("secret_keys.key_id"), nullable=False)
    )
    to_key_id: int = Field(
        sa_column=Column(SmallInteger, ForeignKey("secret_keys.key_id"), nullable=False)
    )
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    rows_total: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows_done: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    last_user_id: str | None = Field(default=None, sa_column=Column(String(64)))


class SweepRun(SQLModel, table=True):
    __tablename__ = "sweep_runs"
    __table_args__ = (
        CheckConstraint(_one_of("outcome", SweepOutcome), name="outcome"),
        Index(None, "business_date"),
        Index(None, "started_at"),
    )

    id: int | None = _id_column()
    business_date: date
    dry_run: bool = Field(default=False)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    installments_marked_overdue: int | None = None
    users_marked_debt: int | None = None
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    error_class: str | None = Field(default=None, sa_column=Column(String(200)))
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    reverted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The portfolio when the run finished (``debt report --html`` draws them over time).
    overdue_amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(14, 2)))
    debt_users: int | None = None
    # The due dates before which the run marks installments OVERDUE (its business date
    # less the grace days); rule 12 reopens a PAID installment by it. None: a run before
    # revision 0010.
    cutoff: date | None = None


class Payment(SQLModel, table=True):
    """Rule 10: money received, to an installment or to a user (then oldest due first).
    ``reference`` is the payment processor's id (unique; none for a command's payment
    without ``--reference``); ``installment_id`` the installment it was paid to, if any;
    ``source`` where it came from (``command`` or the file's name)."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("reference"),
        Index(None, "user_id"),
        Index(None, "paid_at"),
        Index(None, "reinstates", postgresql_where=text("reinstates IS NOT NULL")),
    )

    id: int | None = _id_column()
    reference: str | None = Field(default=None, sa_column=Column(String(100)))
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    installment_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("installments.id"), nullable=True)
    )
    amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    paid_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    # Rule 12: the payment this one puts back (a chargeback reversed, a refund that
    # failed), whose later reversals may take this one back too.
    reinstates: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("payments.id"), nullable=True)
    )
    created_at: datetime | None = _created_at()


class PaymentAllocation(SQLModel, table=True):
    """What a payment paid of each installment (rule 10); they sum to the payment."""

    __tablename__ = "payment_allocations"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index(None, "installment_id"),
    )

    payment_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("payments.id"), primary_key=True)
    )
    installment_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("installments.id"), primary_key=True)
    )
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))


class PaymentReversal(SQLModel, table=True):
    """Rule 12: all or part of a recorded payment taken back (the processor refunded it,
    a chargeback, a returned debit), under its own unique ``reference`` (the processor's
    id for the refund or chargeback). ``reversed_at``: when the money went back (a file's
    row may say; a command's is now); ``source``: ``command`` or the file's name."""

    __tablename__ = "payment_reversals"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("reference"),
        Index(None, "payment_id"),
        Index(None, "user_id"),
    )

    id: int | None = _id_column()
    reference: str = Field(sa_column=Column(String(100), nullable=False))
    payment_id: int = Field(sa_column=Column(BigInteger, ForeignKey("payments.id"), nullable=False))
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    source: str = Field(sa_column=Column(Text, nullable=False))
    reversed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    created_at: datetime | None = _created_at()


class ReversalAllocation(SQLModel, table=True):
    """What a reversal undid of a payment's allocation to an installment (rule 12): they
    sum to the reversal, and the reversals of an allocation never undo more than it paid.
    The key starts with the allocation's (what is left of it is looked up by it); a
    reversal of a payment reinstated (rule 12) may undo the reinstating payment's too."""

    __tablename__ = "reversal_allocations"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index(None, "reversal_id"),
        Index(None, "installment_id"),
    )

    payment_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("payments.id"), primary_key=True)
    )
    installment_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("installments.id"), primary_key=True)
    )
    reversal_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("payment_reversals.id"), primary_key=True)
    )
    user_id: str = Field(sa_column=Column(String(64), ForeignKey("users.user_id"), nullable=False))
    amount: Decimal = Field(sa_column=Column(MONEY, nullable=False))


class IngestedFile(SQLModel, table=True):
    """One row per batch file (webhooks, payments) loaded: what, when, with what result.
    Written only by ``importing/ledger.py``, which names the kind (no default)."""

    __tablename__ = "ingested_files"
    __table_args__ = (
        CheckConstraint(_one_of("kind", FileKind), name="kind"),
        Index(None, "sha256"),
    )

    id: int | None = _id_column()
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    file_name: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    rows: int = 0
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    actor: str = Field(sa_column=Column(String(100), nullable=False))


class WebhookEvent(SQLModel, table=True):
    """Each webhook event id seen, so a repeated event is a duplicate. A log read only by
    its key: no foreign keys (refunds, users and files are never deleted)."""

    __tablename__ = "webhook_events"

    event_id: str = Field(sa_column=Column(String(200), primary_key=True))
    refund_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    user_id: str | None = Field(default=None, sa_column=Column(String(64)))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    outcome: str = Field(sa_column=Column(String(20), nullable=False))
    occurred_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    file_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    received_at: datetime | None = _created_at()


class AuditEvent(SQLModel, table=True):
    """Who did what to which entity. ``details`` never holds raw personal data."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "user_id"),  # audit list --user
        Index(None, "occurred_at"),
    )

    id: int | None = _id_column()
    # No default: every writer binds the unit of work's clock (``services/audit.py``); a
    # row without a time fails loudly instead of taking the server's.
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    action: str = Field(sa_column=Column(String(50), nullable=False))
    # Keys, compared only for equality: byte order ("C"), not the locale's.
    entity: str = Field(sa_column=Column(String(30, collation="C"), nullable=False))
    entity_id: str = Field(sa_column=Column(String(200, collation="C"), nullable=False))
    user_id: str | None = Field(default=None, sa_column=Column(String(64, collation="C")))
    details: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
