"""The whole initial schema: users, plans, installments, refunds, idempotency keys,
sweep runs, ingested files, webhook events and audit events.

Reviewed by hand: money is NUMERIC(12,2) with CHECK (> 0), every status column has an
enum-like CHECK, user-owned tables carry user_id, and the indexes serve the sweep
(partial on UPCOMING due dates), debt show (partial on OVERDUE by user) and the lists.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(
        op.f("ix_audit_events_entity_entity_id"),
        "audit_events",
        ["entity", "entity_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_audit_events_occurred_at"), "audit_events", ["occurred_at"], unique=False
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("command", sa.String(length=50), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("result", postgresql.JSON(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False
    )
    op.create_table(
        "ingested_files",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingested_files")),
    )
    op.create_index(op.f("ix_ingested_files_sha256"), "ingested_files", ["sha256"], unique=False)
    op.create_table(
        "sweep_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("installments_marked_overdue", sa.Integer(), nullable=True),
        sa.Column("users_marked_debt", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_class", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('RUNNING', 'SUCCEEDED', 'FAILED')", name=op.f("ck_sweep_runs_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_runs")),
    )
    op.create_index(
        op.f("ix_sweep_runs_business_date"), "sweep_runs", ["business_date"], unique=False
    )
    op.create_index(op.f("ix_sweep_runs_started_at"), "sweep_runs", ["started_at"], unique=False)
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("phone_e164", sa.String(length=16), nullable=False),
        sa.Column("passport_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("passport_blind_index", sa.String(length=64), nullable=False),
        sa.Column("passport_masked", sa.String(length=20), nullable=False),
        sa.Column("card_brand", sa.String(length=20), nullable=False),
        sa.Column("card_first6", sa.String(length=6), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("card_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="NORMAL", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "card_first6 ~ '^[0-9]{6}$' AND card_last4 ~ '^[0-9]{4}$'", name=op.f("ck_users_card")
        ),
        sa.CheckConstraint(
            "phone_e164 ~ '^\\+[1-9][0-9]{6,14}$'", name=op.f("ck_users_phone_e164")
        ),
        sa.CheckConstraint("status IN ('NORMAL', 'DEBT_USER')", name=op.f("ck_users_status")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.UniqueConstraint("passport_blind_index", name=op.f("uq_users_passport_blind_index")),
    )
    op.create_index(op.f("ix_users_card_fingerprint"), "users", ["card_fingerprint"], unique=False)
    op.create_table(
        "plans",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("total_amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("installment_count", sa.SmallInteger(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("merchant_reference", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="ACTIVE", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('ACTIVE', 'COMPLETED')", name=op.f("ck_plans_status")),
        sa.CheckConstraint(
            "installment_count BETWEEN 1 AND 24", name=op.f("ck_plans_installment_count")
        ),
        sa.CheckConstraint("total_amount > 0", name=op.f("ck_plans_total_amount_positive")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_plans_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    op.create_index(op.f("ix_plans_user_id_status"), "plans", ["user_id", "status"], unique=False)
    op.create_table(
        "installments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.SmallInteger(), nullable=False),
        sa.Column("original_amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amount_due", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="UPCOMING", nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'PAID') = (paid_at IS NOT NULL)", name=op.f("ck_installments_paid_at")
        ),
        sa.CheckConstraint(
            "amount_due > 0 OR (amount_due = 0 AND status = 'PAID')",
            name=op.f("ck_installments_amount_due_positive"),
        ),
        sa.CheckConstraint(
            "status IN ('UPCOMING', 'OVERDUE', 'PAID')", name=op.f("ck_installments_status")
        ),
        sa.CheckConstraint(
            "amount_due <= original_amount", name=op.f("ck_installments_amount_due_le_original")
        ),
        sa.CheckConstraint(
            "original_amount > 0", name=op.f("ck_installments_original_amount_positive")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_installments_plan_id_plans")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_installments_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installments")),
        sa.UniqueConstraint("plan_id", "sequence", name=op.f("uq_installments_plan_id_sequence")),
    )
    op.create_index(
        "ix_installments_due_date_upcoming",
        "installments",
        ["due_date"],
        unique=False,
        postgresql_where=sa.text("status = 'UPCOMING'"),
    )
    op.create_index(op.f("ix_installments_plan_id"), "installments", ["plan_id"], unique=False)
    op.create_index(
        "ix_installments_user_id_overdue",
        "installments",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("status = 'OVERDUE'"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", sa.String(length=100), nullable=False),
        sa.Column("merchant_reference", sa.String(length=100), nullable=True),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="PENDING", nullable=False),
        sa.Column("applied_amount", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("payout_amount", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('PENDING', 'APPROVED', 'REJECTED', 'CANCELLED', 'COMPLETED')",
            name=op.f("ck_refunds_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint(
            "applied_amount IS NULL OR applied_amount >= 0",
            name=op.f("ck_refunds_applied_amount_nonnegative"),
        ),
        sa.CheckConstraint(
            "payout_amount IS NULL OR payout_amount >= 0",
            name=op.f("ck_refunds_payout_amount_nonnegative"),
        ),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_refunds_plan_id_plans")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_refunds_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_refunds_transaction_id")),
    )
    op.create_index(op.f("ix_refunds_plan_id"), "refunds", ["plan_id"], unique=False)
    op.create_index(
        op.f("ix_refunds_user_id_status"), "refunds", ["user_id", "status"], unique=False
    )
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("refund_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["ingested_files.id"],
            name=op.f("fk_webhook_events_file_id_ingested_files"),
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_webhook_events_refund_id_refunds")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_webhook_events_user_id_users")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_webhook_events")),
    )
    op.create_index(
        op.f("ix_webhook_events_refund_id"), "webhook_events", ["refund_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_events_refund_id"), table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index(op.f("ix_refunds_user_id_status"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_plan_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index(
        "ix_installments_user_id_overdue",
        table_name="installments",
        postgresql_where=sa.text("status = 'OVERDUE'"),
    )
    op.drop_index(op.f("ix_installments_plan_id"), table_name="installments")
    op.drop_index(
        "ix_installments_due_date_upcoming",
        table_name="installments",
        postgresql_where=sa.text("status = 'UPCOMING'"),
    )
    op.drop_table("installments")
    op.drop_index(op.f("ix_plans_user_id_status"), table_name="plans")
    op.drop_table("plans")
    op.drop_index(op.f("ix_users_card_fingerprint"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_sweep_runs_started_at"), table_name="sweep_runs")
    op.drop_index(op.f("ix_sweep_runs_business_date"), table_name="sweep_runs")
    op.drop_table("sweep_runs")
    op.drop_index(op.f("ix_ingested_files_sha256"), table_name="ingested_files")
    op.drop_table("ingested_files")
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_audit_events_occurred_at"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_entity_entity_id"), table_name="audit_events")
    op.drop_table("audit_events")
