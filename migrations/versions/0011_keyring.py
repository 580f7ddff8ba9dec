"""Rotatable secret keys: the keyring's keys, which one is primary, and rotations.

``secret_keys`` holds a check of each key of the keyring (``BNPL_SECRET_KEY_FILE``) the
database has seen (a keyed HMAC of a fixed label, never the key), whether it is enabled or
retired, and when it came; the key of ``key_checks`` (revision 0005) becomes key 0.
``key_checks.primary_key_id`` names the key new passports are written under;
``key_checks.pending_key_id`` a key a ``keys rotate`` of this database is adding (set
before it writes the key file, cleared when the database records the key: a rotation
stopped in between is this database's to resume, not another's sharing the file).
``key_rotations`` records each ``keys rotate``: from which key to which, its progress
(``rows_done``, ``last_user_id``) and when it finished; at most one is unfinished.
``users.passport_key_id`` and ``users.card_key_id`` name the key each row's passport
(ciphertext and blind index) and card fingerprint are under: 0 for every row before this
revision, so nothing is rewritten.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret_keys",
        sa.Column("key_id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("key_check", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="enabled", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("key_id >= 0", name=op.f("ck_secret_keys_key_id")),
        sa.CheckConstraint("status IN ('enabled', 'retired')", name=op.f("ck_secret_keys_status")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_secret_keys")),
    )
    op.execute(
        "INSERT INTO secret_keys (key_id, key_check, created_at)"
        " SELECT 0, key_check, created_at FROM key_checks"
    )
    op.add_column(
        "key_checks",
        sa.Column("primary_key_id", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.add_column("key_checks", sa.Column("pending_key_id", sa.SmallInteger(), nullable=True))
    op.create_table(
        "key_rotations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("from_key_id", sa.SmallInteger(), nullable=False),
        sa.Column("to_key_id", sa.SmallInteger(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_total", sa.BigInteger(), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_user_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_key_id"],
            ["secret_keys.key_id"],
            name=op.f("fk_key_rotations_from_key_id_secret_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["to_key_id"],
            ["secret_keys.key_id"],
            name=op.f("fk_key_rotations_to_key_id_secret_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_rotations")),
    )
    op.create_index(
        "ix_key_rotations_unfinished",
        "key_rotations",
        [sa.text("(true)")],
        unique=True,
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.add_column(
        "users", sa.Column("passport_key_id", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "users", sa.Column("card_key_id", sa.SmallInteger(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("users", "card_key_id")
    op.drop_column("users", "passport_key_id")
    op.drop_index("ix_key_rotations_unfinished", table_name="key_rotations")
    op.drop_table("key_rotations")
    op.drop_column("key_checks", "pending_key_id")
    op.drop_column("key_checks", "primary_key_id")
    op.drop_table("secret_keys")
