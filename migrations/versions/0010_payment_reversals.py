"""Rule 12: payment reversals.

``payment_reversals`` holds each reversal (its own unique reference, the payment it takes
back from, how much, why, from where); ``reversal_allocations`` what it undid of each of
the payment's allocations. ``payments.reinstates`` links a payment that puts a reversed
one back (a chargeback reversed) to it; ``sweep_runs.cutoff`` keeps each run's cutoff,
by which a reversal reopens a PAID installment as OVERDUE or UPCOMING (runs before this
revision have none: the grace days then in force are used). A payment's allocations stay
what it paid; what is left of it is its amount minus what its reversals undid.

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
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("installment_id", sa.BigInteger(), nullable=False),
        sa.Column("reversal_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_reversal_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_reversal_allocations_installment_id_installments"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_reversal_allocations_payment_id_payments"),
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
            "payment_id", "installment_id", "reversal_id", name=op.f("pk_reversal_allocations")
        ),
    )
    op.create_index(
        op.f("ix_reversal_allocations_reversal_id"), "reversal_allocations", ["reversal_id"]
    )
    op.create_index(
        op.f("ix_reversal_allocations_installment_id"), "reversal_allocations", ["installment_id"]
    )
    op.add_column("payments", sa.Column("reinstates", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_payments_reinstates_payments"), "payments", "payments", ["reinstates"], ["id"]
    )
    op.create_index(
        op.f("ix_payments_reinstates"),
        "payments",
        ["reinstates"],
        postgresql_where=sa.text("reinstates IS NOT NULL"),
    )
    op.add_column("sweep_runs", sa.Column("cutoff", sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column("sweep_runs", "cutoff")
    op.drop_index(op.f("ix_payments_reinstates"), table_name="payments")
    op.drop_constraint(op.f("fk_payments_reinstates_payments"), "payments", type_="foreignkey")
    op.drop_column("payments", "reinstates")
    op.drop_table("reversal_allocations")
    op.drop_table("payment_reversals")
