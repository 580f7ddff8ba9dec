"""Audit times come from the unit of work only.

``audit_events.occurred_at`` loses its server default (``now()``): every writer binds the
unit of work's clock (``services/audit.py``'s ``insert_events``, ``audit.record``), so an
event written without a time now fails instead of taking the server's clock. Rows
already stored keep their times.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("audit_events", "occurred_at", server_default=None)


def downgrade() -> None:
    op.alter_column("audit_events", "occurred_at", server_default=sa.text("now()"))
