"""Lean write paths for the webhook ingest and the sweep.

``webhook_events`` is the ingest's log of event ids (a re-sent event is a duplicate):
it is written once per webhook row and read only by its primary key, so its foreign
keys (three lookups per row) and its unused ``refund_id`` index go. The log outlives
nothing it names: refunds, users and files are never deleted.
``ix_installments_plan_id`` duplicates the leading column of the unique
``(plan_id, sequence)`` index, which serves every lookup by plan; dropping it saves
one index write per installment the sweep or a refund touches.
``ix_users_card_fingerprint`` serves no query (no command looks users up by card) and
costs one index write per user onboarded; it comes back with the first command that
needs it.
Columns that hold hex digests or keys and are only compared for equality (the users'
blind index and card fingerprint, the audit events' entity and entity id) take the "C"
collation: their indexes compare bytes instead of calling the locale's collation for
every comparison, which makes each insert cheaper (the import writes both users and
audit events, the webhook ingest audit events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENT_FOREIGN_KEYS = (
    ("fk_webhook_events_file_id_ingested_files", ["file_id"], "ingested_files", ["id"]),
    ("fk_webhook_events_refund_id_refunds", ["refund_id"], "refunds", ["id"]),
    ("fk_webhook_events_user_id_users", ["user_id"], "users", ["user_id"]),
)

_BYTE_ORDER_COLUMNS = (
    ("users", "passport_blind_index", 64),
    ("users", "card_fingerprint", 64),
    ("audit_events", "entity", 30),
    ("audit_events", "entity_id", 200),
)


def upgrade() -> None:
    for name, _, _, _ in _EVENT_FOREIGN_KEYS:
        op.drop_constraint(name, "webhook_events", type_="foreignkey")
    op.drop_index("ix_webhook_events_refund_id", table_name="webhook_events")
    op.drop_index("ix_installments_plan_id", table_name="installments")
    op.drop_index("ix_users_card_fingerprint", table_name="users")
    for table, column, length in _BYTE_ORDER_COLUMNS:
        op.alter_column(table, column, type_=sa.String(length, collation="C"))


def downgrade() -> None:
    for table, column, length in _BYTE_ORDER_COLUMNS:
        op.alter_column(table, column, type_=sa.String(length))
    op.create_index("ix_users_card_fingerprint", "users", ["card_fingerprint"], unique=False)
    op.create_index("ix_installments_plan_id", "installments", ["plan_id"], unique=False)
    op.create_index("ix_webhook_events_refund_id", "webhook_events", ["refund_id"], unique=False)
    for name, columns, table, remote in _EVENT_FOREIGN_KEYS:
        op.create_foreign_key(name, "webhook_events", table, columns, remote)
