"""The database keeps a check of the secret key it was set up with.

``key_checks`` holds one row: a keyed HMAC of a fixed label (never the key). Every command
that protects or reads personal data compares the key it was given with it before it
writes, so a missing, replaced or wrong key file stops the command (exit 78) instead of
onboarding the same passport again under a new key. A database upgraded from 0004 gets
its row from the first such command, once that command's key has decrypted a stored
passport (``services/secret_key.py``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_checks",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("key_check", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_key_checks_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_checks")),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
