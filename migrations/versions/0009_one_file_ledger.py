"""One file ledger: payments files are recorded beside webhook files.

``ingested_files.kind`` says what a file held, ``webhooks`` or ``payments``
(``bnplctl.statuses.FileKind``, checked). Every file recorded before this revision was a
webhook file (``payments import`` recorded none), so the column is added with that
default to fill the rows already there, then loses it: the one writer
(``importing/ledger.py``) names the kind of each file, and a writer that forgot it fails.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ingested_files",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="webhooks"),
    )
    op.alter_column("ingested_files", "kind", server_default=None)
    op.create_check_constraint(
        op.f("ck_ingested_files_kind"), "ingested_files", "kind IN ('webhooks', 'payments')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_ingested_files_kind"), "ingested_files", type_="check")
    op.drop_column("ingested_files", "kind")
