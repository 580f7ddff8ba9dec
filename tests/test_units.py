"""``Database.unit()`` and ``Database.units()``: the one way into a transaction (issue 25)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bnplctl import db
from bnplctl.db import Database

_DEFERRED = (
    "CREATE TABLE IF NOT EXISTS unit_probe (n integer,"
    " CONSTRAINT unit_probe_once UNIQUE (n) DEFERRABLE INITIALLY DEFERRED)"
)


@pytest.fixture
def probe(engine: Engine) -> object:
    with engine.begin() as connection:
        connection.execute(text(_DEFERRED))
    yield
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE unit_probe"))


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM unit_probe")).scalar_one())


def test_a_unit_commits_when_its_block_ends_and_rolls_back_on_an_error(
    engine: Engine, probe: object, database: Database
) -> None:
    with database.unit() as work:
        work.connection.execute(text("INSERT INTO unit_probe VALUES (1)"))
    with pytest.raises(RuntimeError), database.unit() as work:
        work.connection.execute(text("INSERT INTO unit_probe VALUES (2)"))
        raise RuntimeError("undo")
    with database.unit(commit=False) as work:  # a dry run: the real statement, then nothing
        work.connection.execute(text("INSERT INTO unit_probe VALUES (3)"))
    assert _count(engine) == 1


def test_a_unit_whose_commit_fails_leaves_the_series_usable(
    engine: Engine, probe: object, database: Database
) -> None:
    """A commit refused by the server (a deferred constraint) rolls the unit back, so the
    next unit of the series on the same connection starts clean (the sweep's job marks
    its run FAILED and unlocks on the same connection after such a failure)."""
    with database.units() as next_unit:
        with pytest.raises(IntegrityError), next_unit() as work:
            work.connection.execute(text("INSERT INTO unit_probe VALUES (1), (1)"))
        with next_unit() as work:
            work.connection.execute(text("INSERT INTO unit_probe VALUES (2)"))
    assert _count(engine) == 1


def test_the_session_of_a_unit_shares_its_transaction(
    engine: Engine, probe: object, database: Database
) -> None:
    with pytest.raises(RuntimeError), database.unit() as work:
        work.connection.execute(text("INSERT INTO unit_probe VALUES (1)"))
        work.session.execute(text("INSERT INTO unit_probe VALUES (2)"))
        raise RuntimeError("undo both")
    with database.unit() as work:
        work.session.execute(text("INSERT INTO unit_probe VALUES (3)"))
        seen = work.connection.execute(text("SELECT count(*) FROM unit_probe")).scalar_one()
    assert (seen, _count(engine)) == (1, 1)


def test_a_savepoint_undoes_its_part_only(
    engine: Engine, probe: object, database: Database
) -> None:
    with database.unit() as work:
        work.connection.execute(text("INSERT INTO unit_probe VALUES (1)"))
        with pytest.raises(IntegrityError), work.savepoint():
            work.connection.execute(text("INSERT INTO unit_probe VALUES (1)"))
            work.connection.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
        work.connection.execute(text("INSERT INTO unit_probe VALUES (2)"))
    assert _count(engine) == 2


def test_a_deadlock_is_said_as_such_not_as_an_unavailable_database(engine: Engine) -> None:
    """Two writers taking the same rows in opposite orders: the server aborts one. That
    is 75 (run it again), said as what it is, not "database unavailable"."""
    import threading

    import psycopg2

    from bnplctl.errors import Unavailable

    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE deadlock_probe (n integer PRIMARY KEY)"))
        connection.execute(text("INSERT INTO deadlock_probe VALUES (1), (2)"))
    dsn = engine.url.render_as_string(hide_password=False).replace("+psycopg2", "")
    first, second = psycopg2.connect(dsn), psycopg2.connect(dsn)
    errors: list[BaseException] = []

    def update(connection: object, n: int) -> None:
        try:
            with connection.cursor() as cursor:  # type: ignore[attr-defined]
                cursor.execute("UPDATE deadlock_probe SET n = n WHERE n = %s", (n,))
        except psycopg2.Error as exc:
            errors.append(exc)

    try:
        update(first, 1)
        update(second, 2)
        crossing = threading.Thread(target=update, args=(first, 2))
        crossing.start()
        update(second, 1)
        crossing.join(30)
    finally:
        for connection in (first, second):
            connection.rollback()
            connection.close()
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE deadlock_probe"))
    assert len(errors) == 1
    said = db.database_error(errors[0])
    assert isinstance(said, Unavailable)
    assert "deadlock" in said.message and "unavailable" not in said.message
    assert "run the command again" in said.message
