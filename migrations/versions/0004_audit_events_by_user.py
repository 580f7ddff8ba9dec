"""Audit events are looked up by the user they concern, not by entity id.

``audit list --user USER_ID`` shows what happened to one customer: their onboarding,
plans, payments, refunds and status changes (every such event carries the owner's
``user_id``). ``ix_audit_events_user_id`` serves it; ``ix_audit_events_entity_entity_id``
served no query and goes, so that writing an event still costs two index entries
besides its primary key. Like the other keys compared only for equality (0002), the
column takes the "C" collation: its index compares bytes, not the locale's order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_audit_events_entity_entity_id", table_name="audit_events")
    op.alter_column("audit_events", "user_id", type_=sa.String(64, collation="C"))
    op.create_index("ix_audit_events_user_id", "audit_events", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_user_id", table_name="audit_events")
    op.alter_column("audit_events", "user_id", type_=sa.String(64))
    op.create_index(
        "ix_audit_events_entity_entity_id", "audit_events", ["entity", "entity_id"], unique=False
    )
