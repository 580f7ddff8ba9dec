"""Plain SQL statements, run the same way on either side of a unit of work.

A statement is text with ``:name`` parameters (``Statement``). ``run(executor, statement,
params)`` runs it on what a unit holds: a SQLAlchemy connection or ORM session (the
commands), or the bare psycopg2 connection (the batch files, which never load
SQLAlchemy: its import and the engine's start are ~0.15 s of every file's run). The rows
come back as named tuples either way (``row.line``, ``row[0]``), with the few
``Result`` methods the services use (``all``, ``one``, ``first``, ``scalar_one``).

The parameters are turned into psycopg2's ``%(name)s`` as SQLAlchemy's ``text()`` turns
them (a ``:name`` not preceded by a colon, a word character or a backslash, nor
followed by a colon, so ``::jsonb`` casts stay), and a literal ``%`` is doubled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)")


class Statement(str):
    """SQL text with ``:name`` parameters (a ``str``: fragments join as strings do)."""

    __slots__ = ()


@cache
def pyformat(sql: str) -> str:
    """``sql`` with psycopg2's ``%(name)s`` parameters."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%"))


@cache
def _clause(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


class Rows:
    """A statement's rows from psycopg2, read at once (a chunk's few thousand at most),
    with the part of SQLAlchemy's ``Result`` the services use."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def is_dbapi(executor: Any) -> bool:
    """Whether ``executor`` is a bare psycopg2 connection (not SQLAlchemy's)."""
    import psycopg2.extensions

    return isinstance(executor, psycopg2.extensions.connection)


def run(executor: Any, statement: str, params: Mapping[str, Any] | None = None) -> Any:
    """Run ``statement`` on a unit's SQLAlchemy connection or session, or on its bare
    psycopg2 connection; returns its rows (``Rows``, or SQLAlchemy's ``Result``)."""
    if not is_dbapi(executor):
        return executor.execute(_clause(statement), dict(params or {}))
    from psycopg2.extras import NamedTupleCursor

    with executor.cursor(cursor_factory=NamedTupleCursor) as cursor:
        cursor.execute(pyformat(statement), dict(params or {}))
        return Rows(cursor.fetchall() if cursor.description is not None else [])
