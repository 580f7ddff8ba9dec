"""One file ledger (issue 25, "one writer per fact"): a payments file is recorded as a
webhook file is, in ``ingested_files`` (its kind, name, checksum, counts per outcome,
times, actor) with an audit event, and ``importing/ledger.py`` is the one writer."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.services import payments as payment_rules
from tests.conftest import Cli, row_counts
from tests.helpers import table_writers, terminated_on_second_call
from tests.test_sweep import seed

PACKAGE = Path(__file__).resolve().parent.parent / "bnplctl"
HEADER = "reference,amount,user_id,installment_id,paid_at\n"
PAYMENT_OUTCOMES = (
    "applied",
    "duplicate",
    "conflict",
    "unknown_user",
    "unknown_installment",
    "overpayment",
    "invalid",
    # a processor's report's (issue 26): every payments file records them, at zero here
    "reversed",
    "unknown_payment",
    "over_reversal",
    "currency",
    "skipped",
)
# What ``webhooks files -o json`` shows of a file, field for field, as before the ledger.
WEBHOOK_FILE_FIELDS = [
    "id", "file", "rows", "applied", "duplicate", "stale", "conflict", "unknown_refund",
    "invalid", "started_at", "finished_at", "actor", "sha256",
]  # fmt: skip


def _files(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, kind, file_name, sha256, rows, counts, started_at, finished_at, actor"
                " FROM ingested_files ORDER BY id"
            )
        ).mappings()
        return [dict(row) for row in rows]


def _file_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT action, entity, entity_id, actor, details FROM audit_events"
                " WHERE entity = 'file' ORDER BY id"
            )
        ).mappings()
        return [dict(row) for row in rows]


def test_a_payments_file_is_recorded_like_a_webhook_file(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    source = tmp_path / "settlement.csv"
    source.write_text(
        HEADER + "L-1,10.00,u-1,,\n" + "L-1,10.00,u-1,,\n" + "L-2,5.00,nobody,,\n" + "L-3,x,u-1,,\n"
    )
    checksum = hashlib.sha256(source.read_bytes()).hexdigest()

    result = cli("--actor", "settle-bot", "payments", "import", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    counts = {name: 0 for name in PAYMENT_OUTCOMES} | {
        "applied": 1,
        "duplicate": 1,
        "unknown_user": 1,
        "invalid": 1,
    }
    (recorded,) = _files(engine)
    assert recorded["kind"] == "payments"
    assert (recorded["file_name"], recorded["sha256"], recorded["rows"]) == (
        str(source),
        checksum,
        4,
    )
    assert recorded["counts"] == counts
    assert recorded["actor"] == "settle-bot"
    assert recorded["started_at"] <= recorded["finished_at"]
    (event,) = _file_events(engine)
    assert event == {
        "action": "payments.imported",
        "entity": "file",
        "entity_id": str(recorded["id"]),
        "actor": "settle-bot",
        "details": {"file": str(source), "sha256": checksum, "rows": 4} | counts,
    }
    # The summary names each file with its checksum, as a webhook ingest's does.
    assert json.loads(result.stdout)["files"] == [
        {"file": str(source), "sha256": checksum, "rows": 4} | counts
    ]
    # Payments files are not webhook files; the audit trail lists every file.
    assert json.loads(cli("webhooks", "files", "-o", "json").stdout) == []
    listed = json.loads(cli("audit", "list", "--entity", "file", "-o", "json").stdout)
    assert [(e["action"], e["details"]["sha256"]) for e in listed] == [
        ("payments.imported", checksum)
    ]


def test_webhooks_files_shows_the_webhook_files_only_and_as_before(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    hooks = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for number, hook in enumerate(hooks):
        hook.write_text(json.dumps({"refund_id": f"none-{number}", "status": "failed"}) + "\n")
    settlement = tmp_path / "settlement.csv"
    settlement.write_text(HEADER + "W-1,10.00,u-1,,\n")
    assert cli("webhooks", "ingest", str(hooks[0])).exit_code == 5
    assert cli("payments", "import", str(settlement)).exit_code == 0
    assert cli("webhooks", "ingest", str(hooks[1])).exit_code == 5

    shown = json.loads(cli("webhooks", "files", "-o", "json").stdout)

    assert [row["file"] for row in shown] == [str(hooks[1]), str(hooks[0])]  # newest first
    assert [list(row) for row in shown] == [WEBHOOK_FILE_FIELDS] * 2
    cut = cli("webhooks", "files", "--limit", "1", "-o", "csv")
    assert "showing 1 of 2" in cut.stderr  # the payments file is not counted either
    assert [e["action"] for e in _file_events(engine)] == [
        "webhooks.ingested",
        "payments.imported",
        "webhooks.ingested",
    ]
    assert [f["kind"] for f in _files(engine)] == ["webhooks", "payments", "webhooks"]


def test_a_dry_run_of_either_kind_records_no_file(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    seed(engine, 1, date(2026, 1, 1))
    settlement = tmp_path / "settlement.csv"
    settlement.write_text(HEADER + "D-1,10.00,u-1,,\n")
    hook = tmp_path / "hook.jsonl"
    hook.write_text(json.dumps({"refund_id": "none", "status": "failed"}) + "\n")
    before = row_counts(engine)

    assert cli("payments", "import", str(settlement), "--dry-run").exit_code == 0
    assert cli("webhooks", "ingest", str(hook), "--dry-run").exit_code == 5

    assert row_counts(engine) == before


def test_a_killed_payments_import_leaves_the_counts_of_its_committed_chunks(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk writes the file's counts in its own transaction: a backend killed in
    the second chunk leaves the first chunk's four rows counted, no finish, no checksum,
    no event; the file run again gets a record of its own, finished."""
    seed(engine, 3, date(2026, 1, 1))
    source = tmp_path / "settlement.csv"
    source.write_text(HEADER + "".join(f"K-{n},10.00,u-{n % 3 + 1},,\n" for n in range(10)))
    cli.chunks(payments=4)

    real = terminated_on_second_call(monkeypatch, engine, payment_rules)
    assert cli("payments", "import", str(source)).exit_code == 75

    (unfinished,) = _files(engine)
    assert (unfinished["kind"], unfinished["rows"], unfinished["counts"]["applied"]) == (
        "payments",
        4,
        4,
    )
    assert (unfinished["finished_at"], unfinished["sha256"]) == (None, "")
    assert _file_events(engine) == []

    monkeypatch.setattr(payment_rules, "apply_chunk", real)
    assert cli("payments", "import", str(source)).exit_code == 5  # four duplicates
    finished = _files(engine)[1]
    assert (finished["rows"], finished["counts"]["duplicate"]) == (10, 4)
    assert finished["finished_at"] is not None
    assert [e["entity_id"] for e in _file_events(engine)] == [str(finished["id"])]


def file_record_writers(source: str) -> list[str]:
    """Where ``source`` spells a write to ``ingested_files`` (an INSERT, UPDATE or
    DELETE in a string), or makes an ``IngestedFile`` by hand."""
    writes = ("insert into ingested_files", "update ingested_files", "delete from ingested_files")
    return table_writers(source, writes, "IngestedFile")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "importing" / "ledger.py"),
    ids=lambda path: str(path.relative_to(PACKAGE)),
)
def test_file_records_are_written_only_by_the_ledger(path: Path) -> None:
    assert not file_record_writers(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "source",
    [
        'x = "INSERT INTO  ingested_files (kind) VALUES (1)"',
        "x = 'update ingested_files\\n set rows = 1'",
        "session.add(IngestedFile(kind='payments'))",
    ],
)
def test_the_ledger_rule_sees_a_second_writer(source: str) -> None:
    assert file_record_writers(source)


def test_the_ledger_is_the_module_the_rule_names() -> None:
    assert (PACKAGE / "importing" / "ledger.py").exists()
