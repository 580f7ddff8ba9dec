"""One writer of audit rows (issue 25): every event takes the unit of work's clock and
actor, and no code but ``services/audit.py`` spells an insert into ``audit_events``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bnplctl.services import audit
from tests.conftest import Cli
from tests.helpers import JOHN, MALIKA, add_args, table_writers

PACKAGE = Path(__file__).resolve().parent.parent / "bnplctl"
FROZEN = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_every_writer_of_a_batch_takes_the_units_clock(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Under a frozen clock, the events of a users import (``user.created``, written by
    the COPY path's statement), of a webhook file (``webhooks.ingested``) and of a
    payments file (``payments.imported``, the same file ledger) carry the frozen time, as
    every other event does, never the server's ``now()``."""
    from freezegun import freeze_time

    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps(MALIKA) + "\n")
    hooks = tmp_path / "hooks.jsonl"
    hooks.write_text(json.dumps({"refund_id": "nope", "status": "approved"}) + "\n")
    settlement = tmp_path / "settlement.jsonl"
    settlement.write_text(json.dumps({"reference": "P", "amount": "1", "user_id": "nope"}) + "\n")
    assert cli(*add_args(JOHN)).exit_code == 0  # (the models are built outside the freeze)
    with freeze_time(FROZEN):
        assert cli("users", "import", str(users)).exit_code == 0
        assert cli("webhooks", "ingest", str(hooks)).exit_code == 5  # an unknown refund
        assert cli("payments", "import", str(settlement)).exit_code == 5  # an unknown user
    with engine.connect() as connection:
        moments = connection.execute(
            text("SELECT action, occurred_at FROM audit_events ORDER BY id")
        ).all()
    assert [action for action, _ in moments] == [
        "user.created",
        "user.created",
        "webhooks.ingested",
        "payments.imported",
    ]
    assert {moment for _, moment in moments[1:]} == {FROZEN}
    with engine.connect() as connection:
        started = connection.execute(
            text("SELECT kind, started_at, finished_at FROM ingested_files ORDER BY id")
        ).all()
    assert [tuple(row) for row in started] == [
        ("webhooks", FROZEN, FROZEN),
        ("payments", FROZEN, FROZEN),
    ]


def test_an_event_without_a_time_is_refused_by_the_database(engine: Engine) -> None:
    """The column has no default left (migration 0008): a writer that forgot the time
    fails loudly instead of taking the server's clock."""
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_events (actor, action, entity, entity_id)"
                " VALUES ('x', 'y', 'z', '1')"
            )
        )


@pytest.mark.parametrize(
    "rows",
    [
        "SELECT now(), :actor, 'a', 'e', '1', NULL, '{}'::jsonb",
        "SELECT :actor, :now, 'a', 'e', '1', NULL, '{}'::jsonb",
        "VALUES (CURRENT_TIMESTAMP, :actor, 'a', 'e', '1', NULL, '{}')",
    ],
)
def test_the_writer_refuses_rows_that_do_not_take_the_units_now(rows: str) -> None:
    with pytest.raises(ValueError, match="the unit's now and actor"):
        audit.insert_events(rows)


def test_the_writer_spells_the_insert(engine: Engine) -> None:
    statement = audit.insert_events(
        "SELECT :now, :actor, 'x.done', 'x', '7', NULL, CAST(:details AS jsonb)"
    )
    with engine.begin() as connection:
        connection.execute(
            text(statement), {"now": FROZEN, "actor": "t", "details": json.dumps({"k": 1})}
        )
        stored = connection.execute(
            text("SELECT occurred_at, actor, action, details FROM audit_events")
        ).one()
        connection.execute(text("DELETE FROM audit_events"))
    assert tuple(stored) == (FROZEN, "t", "x.done", {"k": 1})


def audit_writers(source: str) -> list[str]:
    """Where ``source`` writes audit rows other than through ``services/audit.py``: an
    ``INSERT INTO audit_events`` in a string, or an ``AuditEvent`` made by hand."""
    return table_writers(source, ("insert into audit_events",), "AuditEvent")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "services" / "audit.py"),
    ids=lambda path: str(path.relative_to(PACKAGE)),
)
def test_audit_rows_are_written_only_through_the_one_writer(path: Path) -> None:
    assert not audit_writers(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "source",
    [
        'x = "INSERT INTO  audit_events (actor) VALUES (1)"',
        "x = 'insert into audit_events\\n (actor) select 1'",
        "session.add(AuditEvent(actor='a'))",
    ],
)
def test_the_writer_rule_sees_a_second_writer(source: str) -> None:
    assert audit_writers(source)
