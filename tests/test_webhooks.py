"""Webhook file ingestion: every outcome in every format, re-ingest, crashes, scale."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.errors import InvalidInput
from bnplctl.importing import webhooks
from bnplctl.importing.readers import HashingReader, RawRow
from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args, terminated_on_second_call

HEADER = "refund_id,status,merchant_reference,event_id,occurred_at,amount\n"
# Every outcome, in file order: lines 2-10.
ROWS = [
    ("REF-001", "approved", "M-1", "evt-1", "2025-08-15T19:59:25+00:00", "75.50"),  # applied
    ("REF-001", "approved", "M-1", "evt-1", "2025-08-15T19:59:25+00:00", "75.50"),  # duplicate
    ("REF-002", "processing", "M-2", "evt-2", "2025-08-15T20:00:00+00:00", ""),  # applied
    ("REF-002", "rejected", "M-2", "evt-3", "2025-08-15T21:00:00+00:00", ""),  # applied
    ("REF-002", "approved", "M-2", "evt-4", "2025-08-15T22:00:00+00:00", ""),  # conflict
    ("REF-003", "failed", "M-3", "evt-5", "2025-08-15T10:00:00+00:00", ""),  # applied
    ("REF-003", "approved", "M-3", "evt-6", "2025-08-15T09:00:00+00:00", ""),  # stale
    ("REF-404", "approved", "M-4", "evt-7", "2025-08-15T21:05:00+00:00", ""),  # unknown
    ("REF-004", "refunded", "M-5", "evt-8", "2025-08-15T21:10:00+00:00", ""),  # invalid
]
EXPECTED = {
    "rows": 9,
    "applied": 4,
    "duplicate": 1,
    "stale": 1,
    "conflict": 1,
    "unknown_refund": 1,
    "invalid": 1,
}
FIELDS = ("refund_id", "status", "merchant_reference", "event_id", "occurred_at", "amount")


def _as_csv() -> str:
    return HEADER + "".join(",".join(row) + "\n" for row in ROWS)


def _as_dicts() -> list[dict[str, str]]:
    return [{k: v for k, v in zip(FIELDS, row, strict=True) if v} for row in ROWS]


def _ingested(cli: Cli, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Ingest ``rows`` as a JSON array on stdin; its summary (some rows not applied)."""
    result = cli("webhooks", "ingest", "-", "-o", "json", input=json.dumps(rows))
    assert result.exit_code == 5, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def _statuses(engine: Engine) -> dict[str, str]:
    """Each refund's status by transaction id."""
    return {row[0]: row[1] for row in _state(engine) if isinstance(row[0], str)}


@pytest.fixture
def refunds(cli: Cli, engine: Engine) -> int:
    """REF-001 (on a 300.00 plan) and REF-002..REF-004, all PENDING; returns the plan id."""
    assert cli(*add_args(JOHN)).exit_code == 0
    plan = json.loads(
        cli("plans", "create", "--user", "usr-001", "--amount", "300", "-o", "json").stdout
    )
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "REF-001",
        "--amount", "75.50", "--plan", str(plan["id"]))  # fmt: skip
    for ref in ("REF-002", "REF-003", "REF-004"):
        cli("refunds", "create", "--user", "usr-001", "--transaction-id", ref, "--amount", "10")
    return int(plan["id"])


def _undo_the_ingests(engine: Engine) -> None:
    """Back to the refunds, installments and plans as they were before any file."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE webhook_events, ingested_files"))
        connection.execute(
            text(
                "UPDATE refunds SET status = 'PENDING', applied_amount = NULL,"
                " payout_amount = NULL, last_event_at = NULL, processed_at = NULL,"
                " merchant_reference = NULL"
            )
        )
        connection.execute(
            text(
                "UPDATE installments SET amount_due = original_amount, status = 'UPCOMING',"
                " paid_at = NULL"
            )
        )
        connection.execute(text("UPDATE plans SET status = 'ACTIVE'"))


def _state(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        refunds = connection.execute(
            text(
                "SELECT transaction_id, status, applied_amount, payout_amount, last_event_at,"
                " merchant_reference FROM refunds ORDER BY id"
            )
        ).all()
        installments = connection.execute(
            text("SELECT id, amount_due, status FROM installments ORDER BY id")
        ).all()
    return [tuple(row) for row in refunds] + [tuple(row) for row in installments]


def _summary(result: Any) -> dict[str, int]:
    document = json.loads(result.stdout)
    return {key: document[key] for key in EXPECTED}


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_every_outcome_from_every_format(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, fmt: str
) -> None:
    source = tmp_path / f"updates.{fmt}"
    if fmt == "csv":
        source.write_text(_as_csv())
    elif fmt == "json":
        source.write_text(json.dumps(_as_dicts(), indent=1))
    else:
        source.write_text("\n".join(json.dumps(row) for row in _as_dicts()))
    rejects = tmp_path / "rejects.csv"
    result = cli("webhooks", "ingest", str(source), "--rejects", str(rejects), "-o", "json")

    assert result.exit_code == 5
    assert _summary(result) == EXPECTED
    with rejects.open() as handle:
        rejected = [(row["refund_id"], row["outcome"]) for row in csv.DictReader(handle)]
    assert rejected == [
        ("REF-001", "duplicate"),
        ("REF-002", "conflict"),
        ("REF-003", "stale"),
        ("REF-404", "unknown_refund"),
        ("REF-004", "invalid"),
    ]
    state = {row[0]: row[1:4] for row in _state(engine) if isinstance(row[0], str)}
    assert state["REF-001"][:1] == ("COMPLETED",)
    assert (str(state["REF-001"][1]), str(state["REF-001"][2])) == ("75.50", "0.00")
    assert state["REF-002"][0] == "REJECTED" and state["REF-003"][0] == "REJECTED"
    assert state["REF-004"][0] == "PENDING"
    with engine.connect() as connection:
        last = connection.execute(
            text("SELECT amount_due FROM installments ORDER BY sequence DESC LIMIT 1")
        ).scalar_one()
    assert str(last) == "24.50"  # 100.00 - 75.50, from the last installment (rule 7)


def test_stdin_and_auto_detection(cli: Cli, engine: Engine, refunds: int) -> None:
    lines = "\n".join(json.dumps(row) for row in _as_dicts())
    result = cli("webhooks", "ingest", "-", "-o", "json", input=lines)
    assert _summary(result) == EXPECTED
    document = json.loads(result.stdout)
    assert document["files"][0]["file"] == "-"
    assert len(document["files"][0]["sha256"]) == 64


def test_reingest_changes_nothing(cli: Cli, engine: Engine, refunds: int, tmp_path: Path) -> None:
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    cli("webhooks", "ingest", str(source))
    state, counts = _state(engine), row_counts(engine)
    again = cli("webhooks", "ingest", str(source), "-o", "json")

    assert again.exit_code == 5
    assert _summary(again) | {"rows": 9} == {
        "rows": 9,
        "applied": 0,
        "duplicate": 7,
        "stale": 0,
        "conflict": 0,
        "unknown_refund": 1,
        "invalid": 1,
    }
    assert _state(engine) == state
    changed = {k for k in counts if row_counts(engine)[k] != counts[k]}
    assert changed == {"ingested_files", "audit_events"}  # the second file is recorded


def test_dry_run_reports_without_writing(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    state, counts = _state(engine), row_counts(engine)
    result = cli("webhooks", "ingest", str(source), "--dry-run", "-o", "json")

    assert _summary(result) == EXPECTED
    assert json.loads(result.stdout)["dry_run"] is True
    assert _state(engine) == state and row_counts(engine) == counts
    # The real run after it (same process, same pooled connection) reports the same.
    assert _summary(cli("webhooks", "ingest", str(source), "-o", "json")) == EXPECTED


def test_a_dry_run_of_several_files_reports_what_the_real_run_does(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    """File 2 repeats file 1's event and contradicts its update: the dry run sees file 1
    as the real run does."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + "REF-002,rejected,M,e-1,2025-08-15T10:00:00+00:00,\n")
    second.write_text(
        HEADER
        + "REF-002,rejected,M,e-1,2025-08-15T10:00:00+00:00,\n"
        + "REF-002,approved,M,e-2,2025-08-15T11:00:00+00:00,\n"
    )
    state, counts = _state(engine), row_counts(engine)

    dry = json.loads(
        cli("webhooks", "ingest", str(first), str(second), "--dry-run", "-o", "json").stdout
    )

    assert _state(engine) == state and row_counts(engine) == counts
    real = json.loads(cli("webhooks", "ingest", str(first), str(second), "-o", "json").stdout)
    assert (real["applied"], real["duplicate"], real["conflict"]) == (1, 1, 1)
    assert {k: dry[k] for k in EXPECTED} == {k: real[k] for k in EXPECTED}
    assert [(r["line"], r["outcome"]) for r in dry["rejected"]] == [
        (r["line"], r["outcome"]) for r in real["rejected"]
    ]


def test_files_are_recorded_with_checksum_and_counts(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    import hashlib

    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    cli("--actor", "merchant-bot", "webhooks", "ingest", str(source))
    (recorded,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)

    assert recorded["file"] == str(source)
    assert recorded["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert recorded["rows"] == 9
    assert {k: recorded[k] for k in EXPECTED} == EXPECTED  # a field per outcome, as ingest
    assert recorded["actor"] == "merchant-bot" and recorded["finished_at"]
    with engine.connect() as connection:
        details = connection.execute(
            text("SELECT details FROM audit_events WHERE action = 'webhooks.ingested'")
        ).scalar_one()
    assert details["applied"] == 4 and details["sha256"] == recorded["sha256"]
    assert "Ingested webhook files" in cli("webhooks", "files").stdout


def test_all_applied_exits_0_several_files(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.jsonl"
    first.write_text(HEADER + "REF-002,rejected,M,e-1,,\n")
    second.write_text(json.dumps({"refund_id": "REF-003", "status": "approved"}) + "\n")
    result = cli("webhooks", "ingest", str(first), str(second), "-o", "json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["rows"], document["applied"]) == (2, 2)
    assert [f["rows"] for f in document["files"]] == [1, 1]
    table = cli("webhooks", "ingest", str(first))
    assert table.exit_code == 5 and "event e-1 was ingested before" in table.stderr


def test_input_errors(cli: Cli, engine: Engine, refunds: int, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "REF-002,rejected,M,e-1,,\n")
    missing = cli("webhooks", "ingest", str(good), str(tmp_path / "nope.csv"))
    assert missing.exit_code == 66
    assert row_counts(engine)["ingested_files"] == 0  # checked before anything ran

    broken = tmp_path / "broken.json"
    broken.write_text('[{"refund_id": "REF-002", "status": "rejected"},\n{oops}]')
    result = cli("webhooks", "ingest", str(good), str(broken))
    assert result.exit_code == 65
    assert f"error: {broken}: line 2: invalid JSON" in result.stderr  # which file, too
    no_header = tmp_path / "no-status.csv"
    no_header.write_text("refund_id\nREF-002\n")
    assert "missing column(s): status" in cli("webhooks", "ingest", str(no_header)).stderr
    assert cli("webhooks", "ingest", "-", "-").exit_code == 2  # a path that may not be used


def test_several_updates_of_one_refund_in_one_chunk(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    source = tmp_path / "sequence.csv"
    source.write_text(
        HEADER
        + "REF-004,processing,M,a,2025-01-01T10:00:00Z,\n"
        + "REF-004,approved,M,b,2025-01-01T11:00:00Z,10.00\n"
        + "REF-004,rejected,M,c,2025-01-01T12:00:00Z,\n"
        + "REF-004,approved,M,d,2025-01-01T13:00:00Z,99.00\n"
    )
    result = cli("webhooks", "ingest", str(source), "--rejects", str(tmp_path / "r.csv"))
    assert result.exit_code == 5
    with (tmp_path / "r.csv").open() as handle:
        outcomes = [(r["line"], r["outcome"], r["reason"]) for r in csv.DictReader(handle)]
    assert outcomes == [  # line 2, processing for a PENDING refund, is applied
        ("4", "conflict", "the refund is COMPLETED already (final)"),
        ("5", "invalid", "amount 99.00 does not match the refund amount 10.00"),
    ]
    shown = json.loads(cli("refunds", "show", "REF-004", "-o", "json").stdout)
    assert (shown["status"], shown["payout_amount"]) == ("COMPLETED", "10.00")


def _killed_on_second_call(monkeypatch: pytest.MonkeyPatch, engine: Engine, name: str) -> Any:
    """Make ``webhooks.<name>`` terminate its session's backend on its second call, then
    go on (and fail as a lost connection does); returns the real function."""
    return terminated_on_second_call(monkeypatch, engine, webhooks, name)


def test_a_killed_ingest_then_a_rerun_equals_one_clean_run(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    cli.chunks(webhooks=3)
    # The second chunk, staged while the first is applied: its backend is killed.
    real = _killed_on_second_call(monkeypatch, engine, "stage_chunk")
    killed = cli("webhooks", "ingest", str(source))
    assert killed.exit_code == 75
    assert "database unavailable" in killed.stderr
    # The file's record says how far it got: the first chunk's three rows, unfinished.
    (unfinished,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)
    outcomes = ("applied", "duplicate", "stale", "conflict", "unknown_refund", "invalid")
    assert (unfinished["rows"], sum(unfinished[k] for k in outcomes)) == (3, 3)
    assert (unfinished["finished_at"], unfinished["sha256"]) == (None, None)
    partial = {row[0]: row[1] for row in _state(engine) if isinstance(row[0], str)}
    assert (partial["REF-001"], partial["REF-002"], partial["REF-003"]) == (
        "COMPLETED",  # lines 2-4: the first chunk, committed
        "PENDING",  # its rejection is on line 5, in the chunk whose backend was killed
        "PENDING",
    )
    monkeypatch.setattr(webhooks, "stage_chunk", real)
    assert cli("webhooks", "ingest", str(source)).exit_code == 5
    after_rerun = _state(engine)

    # The same data, one clean run.
    _undo_the_ingests(engine)
    assert cli("webhooks", "ingest", str(source)).exit_code == 5
    assert _state(engine) == after_rerun
    assert cli("verify").exit_code == 0


def _refunds_at_scale(engine: Engine, count: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO refunds (user_id, transaction_id, amount)"
                " SELECT 'usr-001', 'T-' || g, 10 FROM generate_series(1, :count) AS g"
            ),
            {"count": count},
        )


def test_a_50000_row_file_gets_the_planted_outcomes(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    _refunds_at_scale(engine, 20_000)
    rows: list[str] = []

    def add(ref: str, status: str, event: str, at: str) -> None:
        rows.append(f"{ref},{status},M,{event},{at},\n")

    for n in range(1, 20_001):  # first events: 12,000 approved, 6,000 rejected, 2,000 processing
        status = "approved" if n <= 12_000 else "rejected" if n <= 18_000 else "processing"
        add(f"T-{n}", status, f"e-{n}", "2026-01-02T12:00:00Z")
    for n in range(1, 5_001):
        add(f"T-{n}", "approved", f"e-{n}", "2026-01-02T12:00:00Z")  # duplicate event
        add(f"T-{n}", "rejected", f"s-{n}", "2026-01-01T12:00:00Z")  # stale
        add(f"T-{12_000 + n}", "approved", f"c-{n}", "2026-01-03T12:00:00Z")  # conflict
        add(f"T-{18_000 + n % 2_000 + 1}", "processing", f"p-{n}", "")  # applied: PENDING
        add(f"X-{n}", "approved", f"u-{n}", "")  # unknown_refund
        add(f"T-{n}", "cancelled", f"i-{n}", "")  # invalid
    source = tmp_path / "big.csv"
    source.write_text(HEADER + "".join(rows))
    result = cli("webhooks", "ingest", str(source), "-o", "json")

    assert _summary(result) == {
        "rows": 50_000,
        "applied": 25_000,
        "duplicate": 5_000,
        "stale": 5_000,
        "conflict": 5_000,
        "unknown_refund": 5_000,
        "invalid": 5_000,
    }
    with engine.connect() as connection:
        statuses: dict[str, int] = dict(
            connection.execute(text("SELECT status, count(*) FROM refunds GROUP BY 1")).all()
        )
    assert statuses == {"COMPLETED": 12_000, "REJECTED": 6_000, "PENDING": 2_000}


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(FIELDS) + ["other"]),
        st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()),
    )
)
def test_any_row_dict_fails_only_with_invalid_input(fields: dict[str, Any]) -> None:
    try:
        update = webhooks.parse_update(RawRow(1, fields))
    except InvalidInput as exc:
        assert exc.message
    else:
        assert update.target in {"APPROVED", "REJECTED", "PENDING"}
        assert update.transaction_id


# A webhook row's fields as a CSV or JSON file may give them: text, numbers, nulls, and
# values near the edges of what each field takes.
ROW_FIELDS = st.dictionaries(
    st.sampled_from(list(FIELDS) + ["other"]),
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            [
                "approved",
                " Failed ",
                "REJECTED",
                "processing",
                "bogus",
                "10.50",
                "1e3",
                "-5",
                "",
                "  ",
                "2025-08-15T19:59:25Z",
                "2025-08-15T19:59:25+14:00",
                "2025-08-15",
                "0001-01-01T00:00:00+01:00",
                "REF-1",
                " e-1 ",
                "a\x1bb",
                "a\u2028b",
                "x" * 101,
                "\tREF-2\t",
            ]
        ),
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(ROW_FIELDS)
def test_the_fast_path_agrees_with_the_webhook_row_model(fields: dict[str, Any]) -> None:
    """``parse_update`` and ``schemas.WebhookRow``: the same rows accepted with the same
    values, the same rows refused with the same message."""
    from bnplctl.schemas import WebhookRow

    try:
        quick = webhooks._quick_update(RawRow(1, fields))
    except InvalidInput as exc:
        with pytest.raises(InvalidInput) as refused:
            WebhookRow.parse(fields)
        assert refused.value.message == exc.message
        return
    model = WebhookRow.parse(fields)
    assert (model.refund_id, model.event_id, model.occurred_at, model.amount) == (
        quick.transaction_id, quick.event_id, quick.occurred_at, quick.amount
    )  # fmt: skip
    assert (model.status, model.merchant_reference) == (quick.target, quick.merchant_reference)


@settings(max_examples=400, deadline=None)
@given(ROW_FIELDS)
def test_the_plain_row_path_agrees_with_parse_update(fields: dict[str, Any]) -> None:
    """``_plain_columns`` takes only rows ``parse_update`` accepts, with the same values.
    That it takes the rows it must is the next test's."""
    _agrees_with_parse_update(webhooks._plain_columns, fields)


def _agrees_with_parse_update(
    plain_columns: Callable[[RawRow], tuple[object, ...] | None], fields: dict[str, Any]
) -> None:
    row = RawRow(1, fields)
    plain = plain_columns(row)
    if plain is None:
        return  # not plain: the row takes parse_update
    _assert_as_parse_update_gives(plain, row)


def _assert_as_parse_update_gives(plain: tuple[object, ...], row: RawRow) -> None:
    update = webhooks.parse_update(row)  # raises if the plain path took a row it refuses
    *columns, moment, amount, reference = plain
    assert (*columns, amount, reference) == (
        row.line, update.transaction_id, update.target, update.event_id,
        update.amount, update.merchant_reference,
    )  # fmt: skip
    # The same instant, as the server reads the text (an ISO form, in UTC).
    if update.occurred_at is None:
        assert moment is None
    else:
        assert isinstance(moment, str)
        assert datetime.fromisoformat(moment) == update.occurred_at


def _spaced(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``core`` with spaces around, as a CSV cell may have them (a tab is a control
    character: not plain)."""
    ends = st.sampled_from(["", " ", "  "])
    return st.builds(lambda left, middle, right: left + middle + right, ends, core, ends)


_PLAIN_IDS = _spaced(
    st.text(
        st.one_of(st.characters(categories=("L", "Nd")), st.sampled_from("-_.:/#")),
        min_size=1,
        max_size=40,
    )
)
_OFFSETS = ["", "Z", "+00:00", "-00:00", "+05:00", "-03:30", "+14:00", "-15:59", "+23:59"]
_CLOCK_FORMS = ["%H:%M", "%H:%M:%S", "%H:%M:%S.%f"]


@st.composite
def _plain_moments(draw: st.DrawFn) -> str:
    """An ISO timestamp in one of the forms files use, well inside the window."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 12, 30)))
    if draw(st.integers(0, 3)) == 0:
        return moment.date().isoformat()
    separator = draw(st.sampled_from("T "))
    clock = moment.strftime(draw(st.sampled_from(_CLOCK_FORMS)))
    return f"{moment.date().isoformat()}{separator}{clock}{draw(st.sampled_from(_OFFSETS))}"


def _optional(value: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), value)  # a CSV's empty cell


# Plainly valid webhook rows: every field text, a known status in any case, ids
# printable and within their limits, no amount, a timestamp in a form files use. The
# plain path must take every one.
PLAIN_ROW_FIELDS = st.fixed_dictionaries(
    {
        "refund_id": _PLAIN_IDS,
        "status": _spaced(
            st.builds(
                lambda status, case: case(status),
                st.sampled_from(["approved", "rejected", "failed", "processing"]),
                st.sampled_from([str.lower, str.upper, str.title]),
            )
        ),
        "occurred_at": _optional(_spaced(_plain_moments())),  # "": as if absent
    },
    optional={
        "event_id": _optional(_PLAIN_IDS),
        "merchant_reference": _optional(_PLAIN_IDS),
        "amount": st.just(""),
    },
)


def _check_takes_plain_row(
    plain_columns: Callable[[RawRow], tuple[object, ...] | None], fields: dict[str, Any]
) -> None:
    row = RawRow(1, fields)
    plain = plain_columns(row)
    assert plain is not None, "the plain path declined a plainly valid row"
    _assert_as_parse_update_gives(plain, row)


# Each kind of plain row, whatever hypothesis draws.
PINNED_PLAIN_ROWS: list[dict[str, Any]] = [
    {"refund_id": "R-1", "status": "approved", "occurred_at": "2025-08-15T19:59:25Z"},
    {
        "refund_id": " R-2 ",
        "status": " Rejected ",
        "event_id": "evt-2",
        "merchant_reference": "M-2",
        "occurred_at": "2025-08-15 19:59:25.123456+00:00",
        "amount": "",
    },
    {"refund_id": "R-3", "status": "FAILED", "occurred_at": "2025-08-15T19:59"},
    {"refund_id": "R-4", "status": "processing", "occurred_at": " 2025-08-15 "},
    {
        "refund_id": "Ré-5",
        "status": "Approved",
        "event_id": "é-5",
        "occurred_at": "2025-08-15T23:59-15:59",
    },
    {"refund_id": "R-6", "status": "approved", "event_id": "", "occurred_at": ""},
]


def _pinned(test: Callable[..., None]) -> Callable[..., None]:
    for fields in PINNED_PLAIN_ROWS:
        test = example(fields)(test)
    return test


@_pinned
@settings(max_examples=400, deadline=None)
@given(PLAIN_ROW_FIELDS)
def test_plainly_valid_rows_all_take_the_plain_path(fields: dict[str, Any]) -> None:
    _check_takes_plain_row(webhooks._plain_columns, fields)


# A broken subject only has to fail: no shrinking of the example.
_NO_SHRINKING = (Phase.explicit, Phase.generate)


def _declines_all(row: RawRow) -> tuple[object, ...] | None:
    return None


def _declines_event_ids(row: RawRow) -> tuple[object, ...] | None:
    plain = webhooks._plain_columns(row)
    return None if plain is None or plain[3] is not None else plain


def _declines_utc_offsets(row: RawRow) -> tuple[object, ...] | None:
    plain = webhooks._plain_columns(row)  # when plain, every field is text
    utc = plain is not None and row.fields.get("occurred_at", "").strip().endswith(("Z", "+00:00"))
    return None if utc else plain


def _declines_capitals(row: RawRow) -> tuple[object, ...] | None:
    plain = webhooks._plain_columns(row)  # when plain, every field is text
    lower = plain is not None and row.fields["status"] == row.fields["status"].lower()
    return plain if lower else None


@pytest.mark.parametrize(
    "broken",
    [_declines_all, _declines_event_ids, _declines_utc_offsets, _declines_capitals],
    ids=lambda broken: broken.__name__,
)
def test_the_plain_path_properties_fail_on_a_plain_path_that_declines_plain_rows(
    broken: Callable[[RawRow], tuple[object, ...] | None],
) -> None:
    """A plain path that declines plainly valid rows (every row, or a kind of them) passes
    the agreement property, and must fail the plain-rows property."""

    @settings(database=None, derandomize=True, max_examples=100, deadline=None)
    @given(ROW_FIELDS)
    def agreement(fields: dict[str, Any]) -> None:
        _agrees_with_parse_update(broken, fields)

    @_pinned
    @settings(
        database=None,
        derandomize=True,
        deadline=None,
        report_multiple_bugs=False,
        phases=_NO_SHRINKING,
    )
    @given(PLAIN_ROW_FIELDS)
    def plain_rows(fields: dict[str, Any]) -> None:
        _check_takes_plain_row(broken, fields)

    agreement()  # passes: it never sees a row the plain path declined
    with pytest.raises(AssertionError, match="declined a plainly valid row"):
        plain_rows()


def test_plain_rows_take_the_plain_path() -> None:
    fields = {"refund_id": " R-1 ", "status": "Approved", "occurred_at": "2025-08-15T19:59:25Z"}
    assert webhooks._plain_columns(RawRow(7, fields)) == (
        7, "R-1", "APPROVED", None, "2025-08-15T19:59:25Z", None, None,
    )  # fmt: skip
    # Another offset is converted (the server reads offsets only up to 15:59).
    elsewhere = fields | {"occurred_at": "2025-08-15 19:59-23:59"}
    assert webhooks._plain_columns(RawRow(7, elsewhere)) == (
        7, "R-1", "APPROVED", None, "2025-08-16T19:58:00+00:00", None, None,
    )  # fmt: skip
    assert webhooks._plain_columns(RawRow(7, fields | {"amount": "10.00"})) is None


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_through_the_hashing_reader(content: bytes) -> None:
    reader = HashingReader(io.BytesIO(content))
    stream = io.BufferedReader(reader)
    from bnplctl.importing.readers import detect_format, read_rows

    try:
        for row in read_rows(stream, detect_format("-", stream), webhooks.WEBHOOK_COLUMNS):
            try:
                webhooks.parse_update(row)
            except InvalidInput:
                pass
    except InvalidInput:
        pass
    stream.read()
    assert reader.size == len(content)


@pytest.mark.parametrize(
    ("amount", "plan_status", "user_status"),
    [
        ("300", "COMPLETED", "NORMAL"),  # every installment paid off, the OVERDUE one too
        ("200", "ACTIVE", "DEBT_USER"),  # the last two paid off; the OVERDUE first one stays
    ],
)
def test_an_approval_pays_off_installments_then_rule_4(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    amount: str,
    plan_status: str,
    user_status: str,
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    plan = json.loads(
        cli("plans", "create", "--user", "usr-001", "--amount", "300", "-o", "json").stdout
    )
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "BIG",
        "--amount", amount, "--plan", str(plan["id"]))  # fmt: skip
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE installments SET status = 'OVERDUE', overdue_since = due_date + 1"
                " WHERE sequence = 1"
            )
        )
        connection.execute(text("UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'usr-001'"))
    source = tmp_path / "one.csv"
    source.write_text(HEADER + "BIG,approved,M,e-big,2025-08-15T10:00:00Z,\n")

    assert cli("webhooks", "ingest", str(source)).exit_code == 0
    with engine.connect() as connection:
        plan_now = connection.execute(text("SELECT status FROM plans")).scalar_one()
        user_now = connection.execute(text("SELECT status FROM users")).scalar_one()
        actions = sorted(
            row[0]
            for row in connection.execute(
                text("SELECT action FROM audit_events WHERE entity IN ('plan', 'user')")
            )
            if row[0] != "plan.created" and row[0] != "user.created"
        )
    assert (plan_now, user_now) == (plan_status, user_status)
    expected = ["plan.completed", "user.status_changed"] if plan_status == "COMPLETED" else []
    assert actions == expected


def test_the_event_log_has_no_foreign_keys_and_records_each_event_once(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    cli("webhooks", "ingest", str(source))
    with engine.connect() as connection:
        events: dict[str, str] = dict(
            connection.execute(text("SELECT event_id, outcome FROM webhook_events")).all()
        )
        foreign_keys = connection.execute(
            text(
                "SELECT count(*) FROM pg_constraint"
                " WHERE conrelid = 'webhook_events'::regclass AND contype = 'f'"
            )
        ).scalar_one()
    # Events of known refunds, classified under lock, once each; not the unknown or invalid.
    assert events == {
        "evt-1": "applied",
        "evt-2": "applied",
        "evt-3": "applied",
        "evt-4": "conflict",
        "evt-5": "applied",
        "evt-6": "stale",
    }
    assert foreign_keys == 0


def test_a_file_of_only_invalid_rows_changes_nothing(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(HEADER + "REF-001,refunded,M,,,\nREF-002,approved,M,,yesterday,\n")
    state, counts = _state(engine), row_counts(engine)
    result = cli("webhooks", "ingest", str(source), "-o", "json")

    assert result.exit_code == 5
    assert (json.loads(result.stdout)["invalid"], json.loads(result.stdout)["applied"]) == (2, 0)
    assert _state(engine) == state
    assert row_counts(engine)["refunds"] == counts["refunds"]


def test_rows_with_control_characters_are_invalid_the_rest_applied(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    # A NUL (which PostgreSQL cannot store in text) or another control character in
    # any field makes that row invalid; the chunk's other rows still apply.
    rows = [
        {"refund_id": "REF-002", "status": "rejected", "merchant_reference": "M\u0000"},
        {"refund_id": "REF-\u00003", "status": "rejected"},
        {"refund_id": "REF-003", "status": "rejected", "event_id": "evt\u0007"},
        {"refund_id": "REF-004", "status": "rejected", "event_id": "evt-9"},
    ]
    summary = _ingested(cli, rows)
    assert (summary["applied"], summary["invalid"]) == (1, 3)
    states = _statuses(engine)
    assert (states["REF-002"], states["REF-003"], states["REF-004"]) == (
        "PENDING",
        "PENDING",
        "REJECTED",
    )


# Any character at all, with the troublesome ones often: NUL, lone surrogates, other
# control characters, separators and quotes.
_ANY_TEXT = st.lists(
    st.one_of(
        st.sampled_from(["\x00", "\ud800", "\udfff", "\x07", "\x1b", "\n", "\u2028", "\ufeff"]),
        st.sampled_from(["é", "😀", "'", '"', ",", "\\", " "]),
        st.characters(categories=("L", "N", "P", "S", "Z", "C")),
    ),
    max_size=12,
).map("".join)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"refund_id": _ANY_TEXT, "status": st.sampled_from(["approved", "failed"])},
            optional={
                "merchant_reference": _ANY_TEXT,
                "event_id": _ANY_TEXT,
                "occurred_at": _ANY_TEXT,
                "amount": _ANY_TEXT,
            },
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_text_in_any_field_gets_a_row_outcome_never_a_crash(
    cli: Cli, refunds: int, rows: list[dict[str, str]]
) -> None:
    # Control characters, NUL, lone surrogates, any script: every row gets an outcome.
    result = cli("webhooks", "ingest", "-", "-o", "json", input=json.dumps(rows))

    assert result.exit_code in (0, 5), result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == len(rows)
    assert sum(summary[name] for name in webhooks.OUTCOMES) == len(rows)


def test_rows_of_a_json_array_on_one_line_apply_in_file_order(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    # All on line 1: the order of the rows, not their shared line, decides.
    rows = [
        {"refund_id": "REF-002", "status": "rejected", "event_id": "e-1"},
        {"refund_id": "REF-002", "status": "approved", "event_id": "e-2"},
        {"refund_id": "REF-003", "status": "approved", "event_id": "e-3"},
        {"refund_id": "REF-003", "status": "failed", "event_id": "e-3"},
    ]
    summary = _ingested(cli, rows)
    assert (summary["applied"], summary["conflict"], summary["duplicate"]) == (2, 1, 1)
    states = _statuses(engine)
    assert (states["REF-002"], states["REF-003"]) == ("REJECTED", "COMPLETED")


def test_an_amount_too_large_to_quantize_is_an_invalid_row(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    rows = [
        {"refund_id": "REF-002", "status": "failed", "amount": "1e400"},
        {"refund_id": "REF-003", "status": "failed"},
    ]
    summary = _ingested(cli, rows)
    assert (summary["applied"], summary["invalid"]) == (1, 1)


def test_timestamps_with_any_offset_python_accepts_get_a_row_outcome(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    # PostgreSQL takes offsets up to 15:59; Python parses up to 23:59. Timestamps are
    # stored in UTC, and one that leaves the calendar in UTC is an invalid row.
    rows = [
        {"refund_id": "REF-002", "status": "failed", "occurred_at": "2026-01-01T00:00:00-23:59"},
        {"refund_id": "REF-003", "status": "failed", "occurred_at": "9999-12-31T23:59:59-23:59"},
    ]
    summary = _ingested(cli, rows)
    assert (summary["applied"], summary["invalid"]) == (1, 1)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT last_event_at FROM refunds WHERE transaction_id = 'REF-002'")
        ).scalar_one()
    assert stored.isoformat() == "2026-01-01T23:59:00+00:00"


def test_every_form_of_a_timestamp_is_stored_as_the_instant_python_reads(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    """A plain row's time in UTC reaches the server as its own text: each form the rows
    may use is stored as the instant Python reads (no offset: UTC)."""
    forms = [
        "2026-03-01T10:20:30Z",
        "2026-03-01 10:20:30.123456+00:00",
        "2026-03-01T10:20-00:00",
        "2026-03-01T10:20:30",
        "2100-12-31T23:59:59Z",
        "2000-01-01T00:00",
        "2026-03-01T10:20:30+15:59",
        "2026-03-01",
    ]
    expected = [
        (lambda moment: moment if moment.tzinfo else moment.replace(tzinfo=UTC))(
            datetime.fromisoformat(form)
        )
        for form in forms
    ]
    rows = [
        {"refund_id": "REF-002", "status": "processing", "occurred_at": form, "event_id": f"t{n}"}
        for n, form in enumerate(forms)
    ]
    result = cli("webhooks", "ingest", "-", "-o", "json", input=json.dumps(rows))
    assert result.exit_code == 0, result.stdout
    with engine.connect() as connection:
        stored = {
            str(event): moment
            for event, moment in connection.execute(
                text("SELECT event_id, occurred_at FROM webhook_events")
            ).all()
        }
    assert [stored[f"t{n}"] for n in range(len(forms))] == expected


# --- chunks applied while the next is staged -------------------------------------------


def _rejects(path: Path) -> dict[int, tuple[str, str]]:
    with path.open() as handle:
        return {int(row["line"]): (row["outcome"], row["reason"]) for row in csv.DictReader(handle)}


def test_one_row_per_chunk_gives_the_outcomes_of_one_chunk(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next chunk is staged before the one before it commits: an event repeated in the
    next chunk, and later rows of the same refund, must still see the earlier rows."""
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    rejects = tmp_path / "rejects.csv"
    assert cli("webhooks", "ingest", str(source), "--rejects", str(rejects)).exit_code == 5
    in_one_chunk, whole = _state(engine), _rejects(rejects)

    _undo_the_ingests(engine)
    cli.chunks(webhooks=1)
    assert cli("webhooks", "ingest", str(source), "--rejects", str(rejects)).exit_code == 5
    one_by_one = _rejects(rejects)
    assert _state(engine) == in_one_chunk
    assert {line: outcome for line, (outcome, _) in one_by_one.items()} == {
        line: outcome for line, (outcome, _) in whole.items()
    }
    # Line 3 repeats line 2's event: in one chunk, the chunk says so; staged before line
    # 2 had committed, rule 6's statement finds it once it has.
    assert whole[3] == ("duplicate", "event evt-1 repeats line 2")
    assert one_by_one[3] == ("duplicate", "event evt-1 was ingested before")
    assert cli("verify").exit_code == 0


@pytest.mark.parametrize("one_line", [False, True])
def test_approvals_of_one_plan_share_it_in_file_order_whatever_the_chunks(
    cli: Cli,
    engine: Engine,
    refunds: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_line: bool,
) -> None:
    """BIG (the older refund, the lower id) is approved after SMALL in the file: SMALL
    takes its 100.00 first, BIG what is left of the plan, in one chunk as one by one.
    SMALL's approval is its refund's second row (a later round than BIG's), and a JSON
    array on one line gives every row the same line number: file order is neither."""
    for ref, amount in (("BIG", "250"), ("SMALL", "100")):
        cli("refunds", "create", "--user", "usr-001", "--transaction-id", ref,
            "--amount", amount, "--plan", str(refunds))  # fmt: skip
    rows = [
        {"refund_id": "SMALL", "status": "processing", "event_id": "e-0"},
        {"refund_id": "SMALL", "status": "approved"},
        {"refund_id": "BIG", "status": "approved"},
    ]
    source = tmp_path / "approvals.json"
    source.write_text(
        json.dumps(rows) if one_line else "[\n" + ",\n".join(map(json.dumps, rows)) + "\n]"
    )
    assert cli("webhooks", "ingest", str(source)).exit_code == 0
    in_one_chunk = _state(engine)

    _undo_the_ingests(engine)
    cli.chunks(webhooks=1)
    assert cli("webhooks", "ingest", str(source)).exit_code == 0

    assert _state(engine) == in_one_chunk
    big = json.loads(cli("refunds", "show", "BIG", "-o", "json").stdout)
    assert (big["applied_amount"], big["payout_amount"]) == ("200.00", "50.00")
    assert cli("verify").exit_code == 0


# A webhook file over four refunds of one plan (any two approvals take more than it has)
# and one without: approvals compete for the plan's balance, refunds get several rows,
# events repeat.
webhook_files = st.lists(
    st.tuples(
        st.sampled_from(["P-1", "P-2", "P-3", "P-4", "REF-002", "NOPE"]),
        st.sampled_from(["approved", "approved", "rejected", "processing", "failed"]),
        st.sampled_from(["", "", "e-1", "e-2", "e-3"]),
        st.sampled_from(["", "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=webhook_files)
@example(
    rows=[
        ("P-1", "processing", "e-1", ""),
        ("P-1", "approved", "", ""),
        ("P-2", "approved", "", ""),
    ]
)
def test_any_file_ends_the_same_one_row_per_chunk_or_in_one_chunk(
    cli: Cli,
    engine: Engine,
    refunds: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[tuple[str, str, str, str]],
) -> None:
    if not cli("refunds", "show", "P-1").exit_code == 0:
        for n, amount in enumerate(("150", "200", "250", "280"), start=1):
            cli("refunds", "create", "--user", "usr-001", "--transaction-id", f"P-{n}",
                "--amount", amount, "--plan", str(refunds))  # fmt: skip
    source = tmp_path / "any.csv"
    source.write_text(HEADER + "".join(f"{r},{st_},M,{e},{t},\n" for r, st_, e, t in rows))
    rejects = tmp_path / "any-rejects.csv"
    ends = []
    for chunk_rows in (100, 1):
        _undo_the_ingests(engine)
        cli.chunks(webhooks=chunk_rows)
        result = cli("webhooks", "ingest", str(source), "--rejects", str(rejects))
        assert result.exit_code in (0, 5), result.stderr
        outcomes = (
            {line: o for line, (o, _) in _rejects(rejects).items()} if rejects.exists() else {}
        )
        rejects.unlink(missing_ok=True)
        ends.append((outcomes, _state(engine)))
        assert cli("verify").exit_code == 0
    assert ends[0] == ends[1]


def test_ctrl_c_right_after_a_commit_still_counts_that_chunk(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between a chunk's commit and the counting of its rows waits for the count:
    the note, the rejects file and the file's record agree on what was committed."""
    import signal

    source = tmp_path / "updates.csv"
    source.write_text(HEADER + "".join(f"NONE-{n},approved,M,,,\n" for n in range(3)))
    cli.chunks(webhooks=1)
    from bnplctl.importing import ledger

    real = ledger.count_chunk
    calls = {"n": 0}

    def interrupted_on_second(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)
        real(*args)

    monkeypatch.setattr(ledger, "count_chunk", interrupted_on_second)
    rejects = tmp_path / "rejects.csv"
    result = cli("webhooks", "ingest", str(source), "--rejects", str(rejects))

    assert result.exit_code == 130, result.stderr
    (record,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)
    assert record["rows"] == 2
    assert (
        "; 2 row(s) of this run's finished chunks stay handled (0 applied, 2 not)" in result.stderr
    )
    assert list(_rejects(rejects)) == [2, 3]


def test_a_kill_while_applying_rolls_back_the_chunk_staged_ahead(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    cli.chunks(webhooks=3)
    # The second chunk's backend is killed while it is applied, the third staged meanwhile.
    _killed_on_second_call(monkeypatch, engine, "apply_staged")
    killed = cli("webhooks", "ingest", str(source))
    assert killed.exit_code == 75, killed.stderr
    (unfinished,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)
    assert (unfinished["rows"], unfinished["finished_at"]) == (3, None)
    with engine.connect() as connection:
        events = connection.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
        open_transactions = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
        ).scalar_one()
    assert events == 2  # lines 2-4: evt-1 once (line 3 repeats it), evt-2
    assert open_transactions == 0
    assert cli("verify").exit_code == 0


def test_a_fault_in_the_file_keeps_the_chunks_before_it(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault (here a line that is not UTF-8) stops the file where it is: the chunks
    before it are applied, even the one staged when the fault was read."""
    source = tmp_path / "updates.csv"
    rows = "".join(",".join(row) + "\n" for row in ROWS[:4])
    source.write_bytes((HEADER + rows).encode() + b"REF-004,approved,\xff\xfe,e,\n")
    cli.chunks(webhooks=2)
    result = cli("webhooks", "ingest", str(source))
    assert result.exit_code == 65
    assert "not UTF-8" in result.stderr
    (unfinished,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)
    assert (unfinished["rows"], unfinished["finished_at"]) == (4, None)
    statuses = {row[0]: row[1] for row in _state(engine) if isinstance(row[0], str)}
    assert (statuses["REF-001"], statuses["REF-002"]) == ("COMPLETED", "REJECTED")


def test_approvals_sharing_a_plan_in_one_chunk_equal_approving_them_one_by_one(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    """Rule 7 for several approvals of one plan in one statement: they share the plan's
    unpaid balance in refund id order, as the same approvals made one at a time do."""
    for ref, amount in (("P-A", "50"), ("P-B", "120"), ("P-C", "200")):
        created = cli("refunds", "create", "--user", "usr-001", "--transaction-id", ref,
                      "--amount", amount, "--plan", str(refunds))  # fmt: skip
        assert created.exit_code == 0, created.stderr
    source = tmp_path / "approvals.csv"
    source.write_text(HEADER + "P-A,approved,,,,\nP-B,approved,,,,\nP-C,approved,,,,\n")

    def outcome() -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    text(
                        "SELECT transaction_id, status, applied_amount, payout_amount"
                        " FROM refunds WHERE transaction_id LIKE 'P-%' ORDER BY id"
                    )
                )
            ] + [
                tuple(row)
                for row in connection.execute(
                    text(
                        "SELECT sequence, amount_due, status FROM installments"
                        " WHERE plan_id = :plan ORDER BY sequence"
                    ),
                    {"plan": refunds},
                )
            ]

    assert cli("webhooks", "ingest", str(source)).exit_code == 0
    in_one_chunk = outcome()
    _undo_the_ingests(engine)
    for ref in ("P-A", "P-B", "P-C"):
        assert cli("refunds", "approve", ref).exit_code == 0
    assert outcome() == in_one_chunk
    assert in_one_chunk == [
        ("P-A", "COMPLETED", Decimal("50.00"), Decimal("0.00")),
        ("P-B", "COMPLETED", Decimal("120.00"), Decimal("0.00")),
        ("P-C", "COMPLETED", Decimal("130.00"), Decimal("70.00")),
        (1, Decimal("0.00"), "PAID"),
        (2, Decimal("0.00"), "PAID"),
        (3, Decimal("0.00"), "PAID"),
    ]
    assert cli("verify").exit_code == 0


def test_a_sigterm_while_a_chunk_waits_for_its_locks_ends_at_once(
    engine: Engine, refunds: int, tmp_path: Path
) -> None:
    """A chunk waiting for its table locks behind another client (cron's ``timeout``
    sends SIGTERM): the waiting statement is cancelled on the server, the command ends
    with its one line (143) while the lock is still held, and nothing was applied."""
    import signal
    import subprocess
    import time

    from tests.test_crontab import INSTALLED, wait_until

    source = tmp_path / "updates.csv"
    source.write_text(_as_csv())
    before = _state(engine)

    def waiting() -> bool:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = 'bnplctl'"
                        " AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            )

    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE installments IN ACCESS EXCLUSIVE MODE"))
        ingest = subprocess.Popen(
            [str(INSTALLED), "webhooks", "ingest", str(source)], stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(waiting, "the chunk to wait for its locks")
            ingest.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _, stderr = ingest.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            holder.rollback()
    assert ingest.returncode == 143, stderr
    assert took < 10, stderr  # the lock was still held: the wait was cancelled
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert _state(engine) == before


# --- --map FIELD=COLUMN: a merchant's own column names ------------------------------------

# Our fields under a merchant's names, in another order, beside a column nothing reads.
MERCHANT_COLUMNS = {
    "refund_id": "Refund Ref",
    "status": "State",
    "merchant_reference": "Shop Order",
    "event_id": "Event",
    "occurred_at": "When",
    "amount": "Total",
}
MERCHANT_ORDER = ("Event", "Total", "Note", "Refund Ref", "When", "State", "Shop Order")
MAP_OPTIONS = [
    word for name, column in MERCHANT_COLUMNS.items() for word in ("--map", f"{name}={column}")
]


def _merchant_rows() -> list[dict[str, str]]:
    """``ROWS`` as the merchant writes them: their column names, their order, a note."""
    rows = []
    for row in ROWS:
        named = {MERCHANT_COLUMNS[name]: value for name, value in zip(FIELDS, row, strict=True)}
        rows.append({column: named.get(column, "a note") for column in MERCHANT_ORDER})
    return rows


def _written(source: Path, rows: list[dict[str, str]]) -> Path:
    """``rows`` as a file in the format of ``source``'s extension, a row a line (blank
    values left out of JSON objects)."""
    fmt = source.suffix[1:]
    if fmt == "csv":
        lines = [",".join(rows[0]), *(",".join(row.values()) for row in rows)]
        source.write_text("\n".join(lines) + "\n")
        return source
    objects = [json.dumps({key: value for key, value in row.items() if value}) for row in rows]
    source.write_text("[\n" + ",\n".join(objects) + "\n]" if fmt == "json" else "\n".join(objects))
    return source


def _merchant_file(tmp_path: Path, fmt: str) -> Path:
    return _written(tmp_path / f"merchant.{fmt}", _merchant_rows())


def _rejects_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _ingested_in_our_layout(cli: Cli, engine: Engine, tmp_path: Path, fmt: str) -> dict[str, Any]:
    """What ingesting ``ROWS`` in our own layout gives (its JSON summary, its rejects file's
    rows and the state it leaves), then undone, for a mapped file to be compared with."""
    rows = [dict(zip(FIELDS, row, strict=True)) for row in ROWS]
    source, rejects = _written(tmp_path / f"ours.{fmt}", rows), tmp_path / "ours-rejects.csv"
    result = cli("webhooks", "ingest", str(source), "--rejects", str(rejects), "-o", "json")
    assert result.exit_code == 5, result.stderr
    outcome = {"summary": json.loads(result.stdout), "rejects": _rejects_rows(rejects)}
    outcome["state"] = _state(engine)
    _undo_the_ingests(engine)
    return outcome


def _comparable(rejected: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(str(row["line"]), row["refund_id"], row["outcome"]) for row in rejected]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_map_reads_a_merchants_own_columns_as_our_layout(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, fmt: str
) -> None:
    """Renamed and reordered columns (CSV) or keys (JSON, JSON lines), read with --map:
    the same outcomes, rejects and database state as the same rows in our own layout."""
    ours = _ingested_in_our_layout(cli, engine, tmp_path, fmt)
    source, rejects = _merchant_file(tmp_path, fmt), tmp_path / "rejects.csv"

    result = cli("webhooks", "ingest", str(source), *MAP_OPTIONS, "--rejects", str(rejects),
                 "-o", "json")  # fmt: skip

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert _summary(result) == EXPECTED == {key: ours["summary"][key] for key in EXPECTED}
    assert _comparable(summary["rejected"]) == _comparable(ours["summary"]["rejected"])
    assert _state(engine) == ours["state"]
    written = _rejects_rows(rejects)
    assert list(written[0]) == ["file", "line", "refund_id", "outcome", "reason"]
    assert _comparable(written) == _comparable(ours["rejects"])
    # The one invalid row's reason names the merchant's column beside our field.
    (invalid,) = [row for row in written if row["outcome"] == "invalid"]
    assert (
        invalid["reason"]
        == "status (column State): must be approved, rejected, failed or processing"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["refund_id"], "--map: expected FIELD=COLUMN, got 'refund_id'"),
        (["=Refund Ref"], "--map: expected FIELD=COLUMN, got '=Refund Ref'"),
        (["refund_id="], "--map: expected FIELD=COLUMN, got 'refund_id='"),
        (["reference=Ref"], "--map: unknown field 'reference' (fields: refund_id, status,"),
        (["status=State", "Status=Other"], "--map: the field status is given twice"),
        (
            ["refund_id=Ref", "event_id= REF "],
            "--map: the column 'REF' is named for two fields (refund_id and event_id)",
        ),
        (
            ["refund_id=status"],
            "--map: the column 'status' is named for two fields (refund_id, and status by"
            " its name: map status too)",
        ),
    ],
)
def test_map_options_are_usage_errors_when_malformed(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, options: list[str], message: str
) -> None:
    source = _merchant_file(tmp_path, "csv")
    words = [word for option in options for word in ("--map", option)]
    before = _state(engine)

    result = cli("webhooks", "ingest", str(source), *words)

    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert _state(engine) == before and row_counts(engine)["ingested_files"] == 0


def test_map_swapping_two_columns_is_no_usage_error(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    """A column named like another field is fine once that field is mapped too."""
    source = tmp_path / "swapped.csv"
    source.write_text("status,refund_id\nREF-002,rejected\n")
    result = cli("webhooks", "ingest", str(source), "--map", "refund_id=status",
                 "--map", "status=refund_id")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert _statuses(engine)["REF-002"] == "REJECTED"


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("refund_id=Refund Id", "Refund Id (--map refund_id=Refund Id)"),
        ("event_id=Evt", "Evt (--map event_id=Evt)"),  # an optional field's column too
    ],
)
def test_a_mapped_column_missing_from_the_header_stops_the_file(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, option: str, named: str
) -> None:
    source = _merchant_file(tmp_path, "csv")
    mapped = option.split("=")[0]
    others = [
        word
        for name, column in MERCHANT_COLUMNS.items()
        if name != mapped
        for word in ("--map", f"{name}={column}")
    ]
    before = _state(engine)

    result = cli("webhooks", "ingest", str(source), *others, "--map", option)

    assert result.exit_code == 65, result.stderr
    assert f"error: {source}: line 1: missing column(s): {named}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _state(engine) == before


def test_a_json_object_without_the_mapped_key_is_invalid_naming_it(
    cli: Cli, engine: Engine, refunds: int
) -> None:
    """JSON has no header: each object is checked alone, as without --map."""
    lines = "\n".join(
        json.dumps(row)
        for row in (
            {"Ref": "REF-002", "status": "rejected"},
            {"refund_id": "REF-003", "status": "rejected"},  # its own name: not read
        )
    )
    result = cli("webhooks", "ingest", "-", "--map", "refund_id=ref", "-o", "json", input=lines)

    assert result.exit_code == 5, result.stderr
    document = json.loads(result.stdout)
    assert (document["applied"], document["invalid"]) == (1, 1)
    assert [(row["line"], row["reason"]) for row in document["rejected"]] == [
        (2, "refund_id (column ref): required")
    ]
    assert _statuses(engine)["REF-003"] == "PENDING"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_map_wins_over_a_column_named_like_the_field(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path, fmt: str
) -> None:
    """A file that also has a ``refund_id`` column: with --map refund_id=Ref it is not
    read for refund_id (its ids would all be unknown), even where Ref is blank."""
    rows = [{"refund_id": "REF-404", "ref": row[0], **dict(zip(FIELDS[1:], row[1:], strict=True))}
            for row in ROWS]  # fmt: skip
    rows.append({**rows[0], "ref": "", "event_id": "evt-99"})  # line 11: no refund_id at all
    source = tmp_path / f"both.{fmt}"
    if fmt == "csv":
        source.write_text(
            ",".join(rows[0]) + "\n" + "".join(",".join(row.values()) + "\n" for row in rows)
        )
    else:
        source.write_text("\n".join(json.dumps(row) for row in rows))

    result = cli("webhooks", "ingest", str(source), "--map", "refund_id=Ref", "-o", "json")

    assert result.exit_code == 5, result.stderr
    document = json.loads(result.stdout)
    assert {key: document[key] for key in EXPECTED} == EXPECTED | {"rows": 10, "invalid": 2}
    last_line = 11 if fmt == "csv" else 10  # JSON lines have no header line
    assert (document["rejected"][-1]["line"], document["rejected"][-1]["reason"]) == (
        last_line, "refund_id (column Ref): required",
    )  # fmt: skip
    assert _statuses(engine)["REF-001"] == "COMPLETED"


def test_a_dry_run_with_map_writes_nothing(
    cli: Cli, engine: Engine, refunds: int, tmp_path: Path
) -> None:
    source = _merchant_file(tmp_path, "csv")
    state, counts = _state(engine), row_counts(engine)

    result = cli("webhooks", "ingest", str(source), *MAP_OPTIONS, "--dry-run", "-o", "json")

    assert result.exit_code == 5, result.stderr
    assert _summary(result) == EXPECTED and json.loads(result.stdout)["dry_run"] is True
    assert _state(engine) == state and row_counts(engine) == counts


def test_map_is_in_the_help(cli: Cli) -> None:
    shown = cli("webhooks", "ingest", "--help")
    assert shown.exit_code == 0
    assert "--map" in shown.stdout and "FIELD=COLUMN" in shown.stdout


def test_the_fields_map_names_are_the_webhook_rows_fields() -> None:
    from bnplctl.schemas import WebhookRow

    assert set(webhooks.WEBHOOK_FIELDS) == set(WebhookRow.model_fields)
    assert set(webhooks.WEBHOOK_COLUMNS) <= set(webhooks.WEBHOOK_FIELDS)
