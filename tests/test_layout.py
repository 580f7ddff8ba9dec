"""The layering the design rests on (docs/design.md), checked on the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bnplctl"
SERVICES = sorted((PACKAGE / "services").glob("*.py"))


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", SERVICES, ids=lambda path: path.name)
def test_services_import_neither_the_batch_files_nor_the_cli(path: Path) -> None:
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    outside = {
        name
        for name in imported
        if name.startswith(("bnplctl.importing", "bnplctl.cli", "bnplctl.rows"))
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("path", SERVICES, ids=lambda path: path.name)
def test_services_never_begin_commit_or_roll_back(path: Path) -> None:
    """One unit of work: transactions are owned by db.session_scope, connection_scope,
    chunk_transactions and the jobs, never by a service."""
    calls = [
        node.func.attr
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"begin", "commit", "rollback", "begin_nested"}
    ]
    assert not calls, f"{path.name} calls {calls}"


# Every way to open, end or mark a transaction: db.py's units of work (and ``connect``,
# a raw connection), the transaction methods of SQLAlchemy and the DB-API, and SQL text
# that begins, ends or saves a point of one.
UNITS_OF_WORK = {
    "session_scope",
    "connection_scope",
    "read_scope",
    "chunk_transactions",
    "dry_run_scope",
    "connect",
}
TRANSACTION_METHODS = {"begin", "begin_nested", "commit", "rollback"}
_TRANSACTION_SQL = re.compile(
    r"(?:^|;)\s*(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK|ABORT|RELEASE)\b|\bSAVEPOINT\b",
    re.IGNORECASE,
)

# Where importing/ opens a unit of work today, by function (docs/design.md, "Units of
# work and the clock"). The chunk units are the design: a batch file commits per chunk.
IMPORTING_UNITS = {
    "batch.apply_chunks": {"chunk_transactions"},
    "batch._apply_pipelined": {"chunk_transactions"},
    "users._chunk_inserter": {"chunk_transactions"},
    # A dry run over several files: one transaction, rolled back at the end.
    "webhooks.ingest_files": {"dry_run_scope"},
    "payments.import_files": {"dry_run_scope"},
    # Units that are not a chunk's: to go with issue 25's unit of work.
    "users.import_users": {"connection_scope"},  # the key check, no key file yet
    "webhooks._start_file": {"connection_scope"},  # the file's record, before its chunks
    "webhooks._finish_file": {"connection_scope"},  # its counts and event, after them
}


class _TransactionIdioms(ast.NodeVisitor):
    """The transaction idioms in a module, by the function they are in (its name from the
    module's top level: ``outer.inner`` for a nested one, ``Class.method`` for a method;
    ``<module>`` outside any)."""

    def __init__(self, tree: ast.Module) -> None:
        self.found: dict[str, set[str]] = {}
        self._scope: list[str] = []
        self._docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }

    def _add(self, idiom: str) -> None:
        self.found.setdefault(".".join(self._scope) or "<module>", set()).add(idiom)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._scope.append(node.name)
        self.generic_visit(node)
        self._scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _function

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in UNITS_OF_WORK:
            self._add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in UNITS_OF_WORK | TRANSACTION_METHODS:
            self._add(node.attr)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name in UNITS_OF_WORK:
                self._add(alias.name)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self._docstrings:
            for found in _TRANSACTION_SQL.finditer(node.value):
                self._add(f"SQL {found.group().strip(' ;').upper()}")


def transaction_idioms(source: str) -> dict[str, set[str]]:
    tree = ast.parse(source)
    collector = _TransactionIdioms(tree)
    collector.visit(tree)
    return collector.found


def importing_units(sources: dict[str, str]) -> dict[str, set[str]]:
    """``IMPORTING_UNITS``' shape for the modules ``sources`` (file name -> text)."""
    return {
        f"{name.removesuffix('.py')}.{function}": idioms
        for name, source in sources.items()
        for function, idioms in transaction_idioms(source).items()
    }


def _importing_sources() -> dict[str, str]:
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted((PACKAGE / "importing").glob("*.py"))
    }


def test_importing_code_opens_only_the_units_of_work_it_is_known_to() -> None:
    """Batch files receive their connections from db.chunk_transactions, opened where a
    file's chunks are applied; any other unit of work under importing/ is an exception,
    listed in IMPORTING_UNITS by function. A new one fails here; so does one that is gone
    (then take it off the list)."""
    found = importing_units(_importing_sources())
    assert found == IMPORTING_UNITS


@pytest.mark.parametrize(
    ("snippet", "idiom"),
    [
        ("def f(engine):\n    with engine.begin() as c: pass", "begin"),
        ("def f(session):\n    session.begin_nested()", "begin_nested"),
        ("def f(connection):\n    connection.commit()", "commit"),
        ("def f(connection):\n    connection.rollback()", "rollback"),
        ("def f(engine):\n    engine.connect()", "connect"),
        ("def f():\n    from bnplctl.db import session_scope as unit\n    unit()", "session_scope"),
        ("def f():\n    from bnplctl import db\n    db.connection_scope()", "connection_scope"),
        ("def f():\n    with read_scope() as c: pass", "read_scope"),
        ("def f():\n    with chunk_transactions() as chunk: pass", "chunk_transactions"),
        ("def f():\n    with dry_run_scope(): pass", "dry_run_scope"),
        ("def f(cursor):\n    cursor.execute('SAVEPOINT expect_new')", "SQL SAVEPOINT"),
        ("def f(cursor):\n    cursor.execute('ROLLBACK TO SAVEPOINT s')", "SQL ROLLBACK"),
        ("def f(c):\n    c.execute(text('SELECT 1; COMMIT'))", "SQL COMMIT"),
        ("def f(c):\n    c.execute(text('begin isolation level serializable'))", "SQL BEGIN"),
    ],
)
def test_every_transaction_idiom_is_found(snippet: str, idiom: str) -> None:
    assert idiom in transaction_idioms(snippet).get("f", set())


def test_sql_and_docstrings_that_only_mention_a_transaction_are_not_one() -> None:
    source = (
        'def f(c):\n    """Rolled back to a savepoint; commit."""\n'
        "    c.execute('CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS')\n"
        "    c.execute('SELECT begin_at FROM commits')\n"
    )
    assert transaction_idioms(source) == {}


def test_a_new_unit_of_work_under_importing_fails_the_check() -> None:
    """The check above on importing/ doctored: one more unit of work, in a new function
    and in a listed one, each named."""
    sources = _importing_sources()
    sources["webhooks.py"] += (
        "\n\ndef _record_rejects(rows):\n"
        "    from bnplctl.db import connection_scope\n\n"
        "    with connection_scope() as connection:\n"
        "        connection.execute(text('SAVEPOINT rejects'))\n"
    )
    sources["users.py"] = sources["users.py"].replace(
        "    expect_new = True", "    session_scope().__enter__()\n    expect_new = True", 1
    )
    found = importing_units(sources)
    assert found != IMPORTING_UNITS
    assert found["webhooks._record_rejects"] == {"connection_scope", "SQL SAVEPOINT"}
    assert found["users._chunk_inserter"] == {"chunk_transactions", "session_scope"}


def test_the_batch_fast_path_loads_neither_pydantic_nor_the_orm() -> None:
    """Import workers start at once: the validators and onboarding's writes stay free of
    pydantic, SQLAlchemy's ORM and the models."""
    for name in ("validators.py", "services/onboarding.py", "importing/users.py"):
        imported = _imported_modules(ast.parse((PACKAGE / name).read_text(encoding="utf-8")))
        heavy = {
            module
            for module in imported
            if module.startswith(("pydantic", "sqlmodel", "sqlalchemy.orm", "bnplctl.models"))
        }
        assert not heavy, f"{name} imports {sorted(heavy)}"
