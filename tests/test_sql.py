"""``bnplctl/sql.py``: one statement, the same rows on a SQLAlchemy unit and on a bare
psycopg2 one (the batch files' units, which never load SQLAlchemy)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine

from bnplctl.db import SCHEMA_HEAD, Database
from bnplctl.sql import pyformat, run

_STATEMENT = (
    "SELECT CAST(:amount AS numeric) * 2 AS doubled, '{\"a\": 1}'::jsonb ->> 'a' AS a,"
    " 7 % 4 AS remainder, 'x%' AS literal, CAST(:names AS text[]) AS names"
)


@pytest.mark.usefixtures("no_database")
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT :a, :b_2", "SELECT %(a)s, %(b_2)s"),
        ("SELECT x::jsonb, CAST(:v AS int)", "SELECT x::jsonb, CAST(%(v)s AS int)"),
        ("SELECT 7 % 4, 'x%'", "SELECT 7 %% 4, 'x%%'"),
        ("SELECT '10\\:30', a:::t", "SELECT '10\\:30', a:::t"),
    ],
)
def test_parameters_are_turned_as_sqlalchemy_turns_them(sql: str, expected: str) -> None:
    assert pyformat(sql) == expected


@pytest.mark.parametrize("raw", [False, True], ids=["sqlalchemy", "psycopg2"])
def test_a_statement_gives_the_same_rows_on_either_side(database: Database, raw: bool) -> None:
    with database.unit(commit=False, raw=raw) as work:
        executor = work.dbapi if raw else work.connection
        row = run(executor, _STATEMENT, {"amount": Decimal("1.25"), "names": ["a", "b"]}).one()
        empty = run(executor, "SELECT 1 AS one WHERE false").first()
        count = run(executor, "SELECT count(*) FROM generate_series(1, 3)").scalar_one()
    assert (row.doubled, row.a, row.remainder, row.literal) == (Decimal("2.50"), "1", 3, "x%")
    assert row.names == ["a", "b"] and row[0] == Decimal("2.50")
    assert (empty, count) == (None, 3)


def test_a_batch_unit_on_an_external_server_never_loads_sqlalchemy() -> None:
    """The point of the bare units: a batch file's run is spared SQLAlchemy's import."""
    code = (
        "import sys\n"
        "from bnplctl.context import Context\n"
        "context = Context()\n"
        "with context.db.units(raw=True) as next_unit, next_unit() as work:\n"
        "    from bnplctl.sql import run\n"
        "    assert run(work.dbapi, 'SELECT 1 AS one').scalar_one() == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('sqlalchemy'))[:3])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_bare_unit_refuses_a_schema_behind_head(database: Database, engine: Engine) -> None:
    """A bare series checks the schema as the engine does: behind head is exit 78."""
    from sqlalchemy import text

    from bnplctl.errors import ConfigError

    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        with pytest.raises(ConfigError), database.units(raw=True) as next_unit:
            with next_unit():
                pass
    finally:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE alembic_version SET version_num = :head"),
                {"head": SCHEMA_HEAD},
            )
