"""The layering the design rests on (docs/design.md), checked on the source itself."""

from __future__ import annotations

import ast
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


def test_importing_code_owns_no_transaction() -> None:
    """Batch files receive their connections from db.chunk_transactions."""
    for path in sorted((PACKAGE / "importing").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"begin", "commit", "rollback", "connect"}
        ]
        assert not calls, f"{path.name} calls {calls}"


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
