"""The decision's reason beside the reason given at creation.

- ``refunds.decision_reason``: the ``--reason`` of ``refunds approve|reject|cancel``.
  Until this revision a decision's reason overwrote ``reason`` (the one given at
  creation); that earlier text is gone and is not restored here, so refunds decided
  before stay with ``decision_reason`` NULL. A webhook file's decision has no reason of
  ours and leaves it NULL.

A nullable column without a default: adding it rewrites no row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refunds", sa.Column("decision_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("refunds", "decision_reason")
