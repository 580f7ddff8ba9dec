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


# Every module but db.py, where the one unit-of-work API lives (``unit``, ``units``,
# ``savepoint``, ``Unit``).
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "db.py")
_TRANSACTION_CALLS = {"begin", "commit", "rollback", "begin_nested", "connect", "Session"}
_TRANSACTION_SQL = re.compile(
    r"(?:^|;)\s*(SAVEPOINT|ROLLBACK|COMMIT|BEGIN|RELEASE|START\s+TRANSACTION|END)\b"
)
_GONE = {"session_scope", "connection_scope", "read_scope", "chunk_transactions"}


def transaction_idioms(source: str) -> list[str]:
    """Every way ``source`` could own a transaction without ``db.unit``/``db.units``: a
    begin, commit, rollback, savepoint or connect call, an ORM ``Session`` made by hand,
    transaction control in SQL text, or one of the retired scopes."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _TRANSACTION_CALLS:
                found.append(f"line {node.lineno}: {name}()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _TRANSACTION_SQL.search(node.value):
                found.append(f"line {node.lineno}: SQL {node.value.strip()[:40]!r}")
        elif isinstance(node, ast.ImportFrom) and node.module == "bnplctl.db":
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name in _GONE]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_the_unit_of_work_owns_a_transaction(path: Path) -> None:
    """One unit of work (issue 25): every command, job and batch path opens its
    transactions with ``db.unit()`` or ``db.units()`` and undoes part of one only with
    ``db.savepoint``; nothing else begins, commits, rolls back or connects."""
    assert not transaction_idioms(path.read_text(encoding="utf-8")), path.name


@pytest.mark.parametrize(
    "snippet",
    [
        "connection.commit()",
        "with engine.begin() as c: pass",
        "conn.begin_nested()",
        "session.rollback()",
        "engine.connect()",
        "Session(engine)",
        "cursor.execute('SAVEPOINT s')",
        "cursor.execute('SELECT 1; COMMIT')",
        "from bnplctl.db import session_scope",
    ],
)
def test_the_transaction_rule_sees_every_idiom(snippet: str) -> None:
    assert transaction_idioms(snippet)


def test_the_transaction_rule_leaves_prose_and_units_alone() -> None:
    source = (
        '"""Each chunk commits; a rollback undoes it."""\n'
        "from bnplctl.db import savepoint, unit\n"
        "with unit() as work, savepoint(work.connection):\n"
        "    work.connection.execute(text('SELECT 1'))\n"
    )
    assert transaction_idioms(source) == []


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
