"""Sample users shared by the tests (cards are the networks' public test numbers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import date

    from bnplctl.db import Unit
    from bnplctl.services.sweep import SweepResult

JOHN = {
    "user_id": "usr-001",
    "name": "John Doe",
    "phone": "+998901234567",
    "passport": "AA1234567",
    "card": "4111111111111111",
    "dob": "1990-05-20",
}
MALIKA = {
    "user_id": "usr-002",
    "name": "Malika Karimova",
    "phone": "+998935551234",
    "passport": "AB7654321",
    "card": "5555555555554444",
    "dob": "1985-11-02",
}
TIMUR = {
    "user_id": "usr-003",
    "name": "Timur Rashidov",
    "phone": "+998971112233",
    "passport": "AC1112223",
    "card": "378282246310005",
    "dob": "1999-02-28",
}
SAMPLE_CSV = (
    "user_id,name,phone,passport,card,dob\n"
    "usr-001,John Doe,+998901234567,AA1234567,4111111111111111,1990-05-20\n"
    "usr-002,Malika Karimova,+998935551234,AB7654321,5555555555554444,1985-11-02\n"
    "usr-003,Timur Rashidov,+998971112233,AC1112223,378282246310005,1999-02-28\n"
    "usr-004,Bad Card,+998901110000,AD0000001,4111111111111112,1990-01-01\n"
    "usr-005,Too Young,+998901110001,AD0000002,4012888888881881,2015-06-01\n"
)


def add_args(user: dict[str, str]) -> list[str]:
    return [
        "users",
        "add",
        "--user-id",
        user["user_id"],
        "--name",
        user["name"],
        "--phone",
        user["phone"],
        "--passport",
        user["passport"],
        "--card",
        user["card"],
        "--dob",
        user["dob"],
    ]


def command_tree() -> dict[str, object]:
    """Every command of the CLI by its full name (``users import``; the root commands and
    each group of ``LAZY_GROUPS``, built as ``bnplctl`` builds them), as click commands."""
    import typer

    from bnplctl.cli.app import app

    root = typer.main.get_command(app)
    context = typer.Context(root, info_name="bnplctl")
    found: dict[str, object] = {}

    def walk(command: object, path: list[str], parent: typer.Context) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(parent):
                sub = command.get_command(parent, name)  # type: ignore[attr-defined]
                walk(sub, [*path, name], typer.Context(sub, parent=parent, info_name=name))
        else:
            found[" ".join(path)] = command

    walk(root, [], context)
    return found


def table_writers(source: str, writes: tuple[str, ...], model: str) -> list[str]:
    """Where ``source`` writes a table other than through its one writer: one of
    ``writes`` (``"insert into audit_events"``, compared without case or spacing) in a
    string, or the table's ``model`` made by hand."""
    import ast

    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            spelled = " ".join(node.value.lower().split())
            if any(write in spelled for write in writes):
                found.append(f"line {node.lineno}: SQL")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == model:
            found.append(f"line {node.lineno}: {model}()")
    return found


@contextmanager
def unit(**options: Any) -> Iterator[Unit]:
    """A unit of work on the test database in a context of its own, built from the
    environment as a command's is (the threads of the race tests each have theirs)."""
    from bnplctl.context import Context

    context = Context()
    try:
        with context.db.unit(**options) as work:
            yield work
    finally:
        context.close()


def run_sweep(
    *, as_of: date, dry_run: bool = False, actor: str = "t", **options: Any
) -> SweepResult:
    """``jobs.sweep_job`` for ``as_of`` in a context of its own, as ``debt sweep`` runs it."""
    from bnplctl.context import Context
    from bnplctl.jobs import sweep_job

    context = Context(actor=actor)
    try:
        return sweep_job(context, as_of=as_of, dry_run=dry_run, **options)
    finally:
        context.close()


def terminated_on_second_call(
    monkeypatch: Any, engine: Any, module: Any, name: str = "apply_chunk"
) -> Any:
    """Patch ``module.name`` so that its second call first has the server terminate the
    backend of the connection it was given (a kill mid-file, as the server sees one);
    returns the real function (patch it back to run the file again)."""
    from sqlalchemy import text

    from bnplctl.sql import run

    real = getattr(module, name)
    calls = {"n": 0}

    def killed_on_second(connection: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            pid = run(connection, "SELECT pg_backend_pid()").scalar_one()
            with engine.connect() as killer:
                killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return real(connection, *args, **kwargs)

    monkeypatch.setattr(module, name, killed_on_second)
    return real
