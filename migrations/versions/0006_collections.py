"""Collections: payments as records, since when an installment is overdue, undoing a sweep.

- ``payments`` and ``payment_allocations`` (rule 10). What an installment still owes is
  ``amount_due``, lowered by payments and by refunds (rule 7), and an installment is PAID
  exactly when nothing is due. Installments paid in full before this revision kept their
  amount: each becomes a payment of that amount (source ``migration 0006``, paid when the
  installment was), allocated to it, and its ``amount_due`` becomes 0, so what payments
  and refunds cut from every plan still adds up (``verify``'s ``payment_cuts`` and
  ``refund_cuts``).
- ``installments.overdue_since`` and ``overdue_run_id`` (rule 3), written by the sweep.
  An installment already OVERDUE gets the business date of the first successful sweep
  after its due date, or the day after its due date when no run is on record.
- ``sweep_runs.reverted_at`` and the outcome ``REVERTED`` (rule 11); ``overdue_amount``
  and ``debt_users``, the portfolio when a run finished (the HTML report's history).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTCOMES_BEFORE = "outcome IN ('RUNNING', 'SUCCEEDED', 'FAILED')"
_OUTCOMES = "outcome IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'REVERTED')"


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("installment_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_payments_installment_id_installments"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_payments_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("reference", name=op.f("uq_payments_reference")),
    )
    op.create_index(op.f("ix_payments_user_id"), "payments", ["user_id"])
    op.create_index(op.f("ix_payments_paid_at"), "payments", ["paid_at"])
    op.create_table(
        "payment_allocations",
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("installment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_payment_allocations_installment_id_installments"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_payment_allocations_payment_id_payments"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_payment_allocations_user_id_users")
        ),
        sa.PrimaryKeyConstraint(
            "payment_id", "installment_id", name=op.f("pk_payment_allocations")
        ),
    )
    op.create_index(
        op.f("ix_payment_allocations_installment_id"), "payment_allocations", ["installment_id"]
    )

    op.add_column("installments", sa.Column("overdue_since", sa.Date(), nullable=True))
    op.add_column("installments", sa.Column("overdue_run_id", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE installments i
        SET overdue_since = coalesce(run.business_date, i.due_date + 1),
            overdue_run_id = run.id
        FROM installments o
        LEFT JOIN LATERAL (
            SELECT r.id, r.business_date FROM sweep_runs r
            WHERE r.outcome = 'SUCCEEDED' AND NOT r.dry_run AND r.business_date > o.due_date
            ORDER BY r.business_date, r.id
            LIMIT 1
        ) AS run ON true
        WHERE o.id = i.id AND i.status = 'OVERDUE'
        """
    )
    op.execute(
        """
        WITH paid_before AS (
            SELECT id, user_id, amount_due, paid_at,
                   nextval(pg_get_serial_sequence('payments', 'id')) AS payment_id
            FROM installments
            WHERE status = 'PAID' AND amount_due > 0
        ), recorded AS (
            INSERT INTO payments (id, user_id, installment_id, amount, source, paid_at, actor)
            SELECT payment_id, user_id, id, amount_due, 'migration 0006', paid_at,
                   'migration 0006'
            FROM paid_before
        ), allocated AS (
            INSERT INTO payment_allocations (payment_id, installment_id, user_id, amount)
            SELECT payment_id, id, user_id, amount_due FROM paid_before
        )
        UPDATE installments i SET amount_due = 0
        FROM paid_before p
        WHERE i.id = p.id
        """
    )
    op.drop_constraint(op.f("ck_installments_amount_due_positive"), "installments")
    op.create_check_constraint(
        op.f("ck_installments_amount_due_nonnegative"), "installments", "amount_due >= 0"
    )
    op.create_check_constraint(
        op.f("ck_installments_paid_when_nothing_due"),
        "installments",
        "(status = 'PAID') = (amount_due = 0)",
    )
    op.create_check_constraint(
        op.f("ck_installments_overdue_since"),
        "installments",
        "status <> 'OVERDUE' OR overdue_since IS NOT NULL",
    )

    op.add_column("sweep_runs", sa.Column("reverted_at", sa.DateTime(timezone=True)))
    op.add_column(
        "sweep_runs", sa.Column("overdue_amount", sa.Numeric(precision=14, scale=2), nullable=True)
    )
    op.add_column("sweep_runs", sa.Column("debt_users", sa.Integer(), nullable=True))
    op.drop_constraint(op.f("ck_sweep_runs_outcome"), "sweep_runs")
    op.create_check_constraint(op.f("ck_sweep_runs_outcome"), "sweep_runs", _OUTCOMES)


def downgrade() -> None:
    # A reverted run was a successful one; payments go back into the amounts they paid
    # (an installment partly paid keeps what is still due: nothing records it otherwise).
    op.drop_constraint(op.f("ck_sweep_runs_outcome"), "sweep_runs")
    op.execute("UPDATE sweep_runs SET outcome = 'SUCCEEDED' WHERE outcome = 'REVERTED'")
    op.create_check_constraint(op.f("ck_sweep_runs_outcome"), "sweep_runs", _OUTCOMES_BEFORE)
    op.drop_column("sweep_runs", "debt_users")
    op.drop_column("sweep_runs", "overdue_amount")
    op.drop_column("sweep_runs", "reverted_at")

    op.drop_constraint(op.f("ck_installments_overdue_since"), "installments")
    op.drop_constraint(op.f("ck_installments_paid_when_nothing_due"), "installments")
    op.drop_constraint(op.f("ck_installments_amount_due_nonnegative"), "installments")
    op.execute(
        """
        UPDATE installments i SET amount_due = paid.amount
        FROM (
            SELECT installment_id, sum(amount) AS amount
            FROM payment_allocations GROUP BY installment_id
        ) AS paid
        WHERE i.id = paid.installment_id AND i.status = 'PAID' AND i.amount_due = 0
        """
    )
    op.create_check_constraint(
        op.f("ck_installments_amount_due_positive"),
        "installments",
        "amount_due > 0 OR (amount_due = 0 AND status = 'PAID')",
    )
    op.drop_column("installments", "overdue_run_id")
    op.drop_column("installments", "overdue_since")

    op.drop_index(op.f("ix_payment_allocations_installment_id"), "payment_allocations")
    op.drop_table("payment_allocations")
    op.drop_index(op.f("ix_payments_paid_at"), "payments")
    op.drop_index(op.f("ix_payments_user_id"), "payments")
    op.drop_table("payments")
