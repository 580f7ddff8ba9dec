"""Rule 12: payment reversals.

``payment_reversals`` holds each reversal (its own unique reference, the payment it takes
back from, how much, why, from where); ``reversal_allocations`` what it undid of each of
the payment's allocations. Nothing existing changes: a payment's allocations stay what it
paid, and what is left of it is its amount minus its reversals.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(12, 2)


def upgrade() -> None:
    op.create_table(
        "payment_reversals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_reversals_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_reversals_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_payment_reversals_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_reversals")),
        sa.UniqueConstraint("reference", name=op.f("uq_payment_reversals_reference")),
    )
    op.create_index(op.f("ix_payment_reversals_payment_id"), "payment_reversals", ["payment_id"])
    op.create_index(op.f("ix_payment_reversals_user_id"), "payment_reversals", ["user_id"])
    op.create_table(
        "reversal_allocations",
        sa.Column("reversal_id", sa.BigInteger(), nullable=False),
        sa.Column("installment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_reversal_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_reversal_allocations_installment_id_installments"),
        ),
        sa.ForeignKeyConstraint(
            ["reversal_id"],
            ["payment_reversals.id"],
            name=op.f("fk_reversal_allocations_reversal_id_payment_reversals"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_reversal_allocations_user_id_users")
        ),
        sa.PrimaryKeyConstraint(
            "reversal_id", "installment_id", name=op.f("pk_reversal_allocations")
        ),
    )
    op.create_index(
        op.f("ix_reversal_allocations_installment_id"), "reversal_allocations", ["installment_id"]
    )


def downgrade() -> None:
    op.drop_table("reversal_allocations")
    op.drop_table("payment_reversals")
