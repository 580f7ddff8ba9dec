"""Alembic environment: one connection, the models' metadata, an advisory lock.

``bnplctl db upgrade`` hands in its own connection through ``config.attributes``;
the plain ``alembic`` command resolves the database from the bnplctl settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import bnplctl.models  # noqa: F401 - the tables, registered on SQLModel.metadata
from bnplctl.db import MIGRATION_LOCK_ID

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from sqlalchemy import create_engine

    from bnplctl.context import load_settings
    from bnplctl.db import resolve_url

    # Alembic's own command line: a composition root of its own.
    with create_engine(resolve_url(load_settings())).connect() as own_connection:
        _run(own_connection)
        own_connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
