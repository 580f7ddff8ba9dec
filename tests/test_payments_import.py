"""``payments import``: rule 10 from files, per-row outcomes, crash safety, concurrency."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.importing import payments as payments_import
from bnplctl.services import payments as payment_rules
from tests.conftest import TABLES, Cli, row_counts
from tests.helpers import run_sweep, terminated_on_second_call
from tests.test_concurrency import Worker
from tests.test_sweep import seed

HEADER = "reference,amount,user_id,installment_id,paid_at\n"


def _ids(engine: Engine, user_id: str) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT id FROM installments WHERE user_id = :u ORDER BY due_date"),
                {"u": user_id},
            ).scalars()
        )


def _state(engine: Engine) -> dict[str, Any]:
    """What a payments file leaves: installments, users, payments and their allocations
    (by reference: a killed chunk's payment ids are never used again)."""
    with engine.connect() as connection:
        return {
            "installments": connection.execute(
                text("SELECT id, amount_due::text, status, paid_at FROM installments ORDER BY id")
            ).all(),
            "users": connection.execute(
                text("SELECT user_id, status FROM users ORDER BY user_id")
            ).all(),
            "plans": connection.execute(text("SELECT id, status FROM plans ORDER BY id")).all(),
            "payments": connection.execute(
                text(
                    "SELECT p.reference, p.amount::text, p.user_id, p.installment_id, p.paid_at,"
                    " a.installment_id, a.amount::text FROM payments p"
                    " JOIN payment_allocations a ON a.payment_id = p.id"
                    " ORDER BY p.reference, a.installment_id"
                )
            ).all(),
        }


def _verify_clean(cli: Cli) -> None:
    result = cli("verify", "-o", "json")
    assert result.exit_code == 0, result.stdout


def test_every_outcome_once(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    seed(engine, 2, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 1, 15), dry_run=False, actor="t")
    mine, theirs = _ids(engine, "u-1"), _ids(engine, "u-2")
    source = tmp_path / "settlement.csv"
    source.write_text(
        HEADER
        + "P-1,150.00,u-1,,2026-01-20T10:00:00Z\n"  # line 2: the OVERDUE one, then half the next
        + f"P-2,20.00,,{mine[1]},\n"  # 3: to an installment
        + "P-1,150.00,u-1,,\n"  # 4: the same payment again
        + "P-1,151.00,u-1,,\n"  # 5: another payment with its reference
        + "P-3,5.00,nobody,,\n"  # 6
        + "P-4,5.00,,999999,\n"  # 7
        + "P-5,1000.00,u-1,,\n"  # 8: more than u-1 still owes
        + "P-6,abc,u-1,,\n"  # 9
        + f"P-7,5.00,u-1,{theirs[0]},\n"  # 10: u-2's installment
        + "P-8,300.00,u-2,,\n"  # 11: everything u-2 owes
    )
    rejects = tmp_path / "rejects.csv"

    result = cli("payments", "import", str(source), "--rejects", str(rejects), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in payments_import.OUTCOMES} == {
        "applied": 3, "duplicate": 1, "conflict": 1, "unknown_user": 1,
        "unknown_installment": 1, "overpayment": 1, "invalid": 2, "reversed": 0,
        "unknown_payment": 0, "over_reversal": 0, "currency": 0, "skipped": 0,
    }  # fmt: skip
    assert [(r["line"], r["outcome"]) for r in summary["rejected"]] == [
        (4, "duplicate"), (5, "conflict"), (6, "unknown_user"), (7, "unknown_installment"),
        (8, "overpayment"), (9, "invalid"), (10, "invalid"),
    ]  # fmt: skip
    assert "1000.00 is more than the 130.00 still due" in summary["rejected"][4]["reason"]
    assert rejects.read_text().splitlines()[0] == "file,line,reference,outcome,reason"
    state = _state(engine)
    amounts = {row[0]: (row[1], row[2]) for row in state["installments"]}
    assert amounts[mine[0]] == ("0.00", "PAID")
    assert amounts[mine[1]] == ("30.00", "UPCOMING")  # 100 - 50 (P-1) - 20 (P-2)
    assert {row[0]: row[1] for row in state["users"]} == {"u-1": "NORMAL", "u-2": "NORMAL"}
    assert {row[0]: row[1] for row in state["plans"]}[2] == "COMPLETED"
    paid_at = {row[0]: row[3] for row in state["installments"]}[mine[0]]
    assert paid_at.isoformat() == "2026-01-20T10:00:00+00:00"  # the file's paid_at
    _verify_clean(cli)

    again = cli("payments", "import", str(source), "-o", "json")

    assert again.exit_code == 5
    assert json.loads(again.stdout)["applied"] == 0
    assert json.loads(again.stdout)["duplicate"] == 4
    assert _state(engine) == state


def test_a_dry_run_reports_the_outcomes_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    source = tmp_path / "p.jsonl"
    source.write_text(
        '{"reference": "J-1", "amount": "40", "user_id": "u-1"}\n'
        '{"reference": "J-2", "amount": "400", "user_id": "u-1"}\n'
    )
    before = (row_counts(engine), _state(engine))

    dry = cli("payments", "import", str(source), "--dry-run", "-o", "json")

    assert dry.exit_code == 5
    assert {k: json.loads(dry.stdout)[k] for k in ("applied", "overpayment", "dry_run")} == {
        "applied": 1, "overpayment": 1, "dry_run": True,
    }  # fmt: skip
    assert (row_counts(engine), _state(engine)) == before


def test_a_dry_run_of_several_files_reports_what_the_real_run_does(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + "D-1,250.00,u-1,,\n")
    second.write_text(HEADER + "D-1,250.00,u-1,,\n" + "D-2,100.00,u-1,,\n")  # 50.00 left
    before = (row_counts(engine), _state(engine))

    dry = cli("payments", "import", str(first), str(second), "--dry-run", "-o", "json")

    assert (row_counts(engine), _state(engine)) == before
    real = cli("payments", "import", str(first), str(second), "-o", "json")
    outcomes = ("applied", "duplicate", "overpayment")
    assert [json.loads(real.stdout)[k] for k in outcomes] == [1, 1, 1]
    assert [json.loads(dry.stdout)[k] for k in outcomes] == [1, 1, 1]
    assert dry.exit_code == real.exit_code == 5


def test_a_bad_line_midway_says_what_was_applied_before_it(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks before a line that cannot be read are committed and stay: the operator is
    told how many rows that was before the error itself."""
    seed(engine, 1, date(2026, 1, 1))
    cli.chunks(payments=2)
    source = tmp_path / "cut.json"
    good = [{"reference": f"M-{n}", "amount": "10", "user_id": "u-1"} for n in range(4)]
    source.write_text("[" + "".join(json.dumps(row) + ",\n" for row in good) + "{oops}]")

    result = cli("payments", "import", str(source))

    assert result.exit_code == 65
    assert row_counts(engine)["payments"] == 4
    (error,) = result.stderr.strip().splitlines()  # one line, the note after the error
    assert error.startswith("error:") and "line 5" in error
    assert error.endswith(
        "; 4 row(s) of this run's finished chunks stay handled (4 applied, 0 not); run the"
        " file again to finish it (rows applied already come back as duplicate)"
    )
    dry = cli("payments", "import", str(source), "--dry-run")
    assert dry.exit_code == 65 and "stay handled" not in dry.stderr  # a dry run keeps nothing


def test_standard_input_and_a_json_array(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 1, 1))
    rows = [{"reference": f"S-{n}", "amount": "10.00", "user_id": "u-1"} for n in range(3)]

    result = cli("payments", "import", "-", "--format", "json", "-o", "csv", input=json.dumps(rows))

    assert result.exit_code == 0, result.stderr
    header, counts = result.stdout.splitlines()
    assert header.startswith("rows,applied,duplicate,conflict")
    assert counts.startswith("3,3,0,0")
    assert _state(engine)["installments"][0][1] == "70.00"


def _reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


def test_a_killed_import_then_a_rerun_equals_one_clean_run(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "settlement.csv"
    source.write_text(
        HEADER
        + "".join(
            f"K-{n},{35 + n}.00,u-{n % 3 + 1},,2026-02-0{n % 9 + 1}T09:00:00Z\n" for n in range(12)
        )
    )
    cli.chunks(payments=4)

    seed(engine, 3, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t")
    real = terminated_on_second_call(monkeypatch, engine, payment_rules)
    killed = cli("payments", "import", str(source))
    assert killed.exit_code == 75, killed.stderr
    assert row_counts(engine)["payments"] == 4  # the first chunk, committed
    monkeypatch.setattr(payment_rules, "apply_chunk", real)
    rerun = cli("payments", "import", str(source), "-o", "json")
    assert json.loads(rerun.stdout)["duplicate"] == 4
    after_rerun = _state(engine)
    _verify_clean(cli)

    _reset(engine)
    seed(engine, 3, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t")
    clean = cli("payments", "import", str(source), "-o", "json")
    assert json.loads(clean.stdout)["duplicate"] == 0
    assert _state(engine) == after_rerun


def _outcomes(rejects: Path) -> dict[int, str]:
    lines = rejects.read_text().splitlines()[1:]
    return {int(line.split(",")[1]): line.split(",")[3] for line in lines}


def test_chunk_boundaries_do_not_change_the_outcomes(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is classified while the one before is still being applied; a reference it
    repeats from that chunk is found once that chunk has committed: one row per chunk
    ends as the whole file in one chunk does."""
    source = tmp_path / "repeats.csv"
    source.write_text(
        HEADER
        + "R-1,10.00,u-1,,2026-01-20T10:00:00Z\n"  # line 2
        + "R-1,10.00,u-1,,2026-01-20T10:00:00Z\n"  # 3: the same payment again
        + "R-1,11.00,u-1,,2026-01-20T10:00:00Z\n"  # 4: another payment with its reference
        + "R-2,10.00,nobody,,2026-01-20T10:00:00Z\n"  # 5: unknown user ...
        + "R-2,10.00,u-2,,2026-01-20T10:00:00Z\n"  # 6: ... this one is R-2's first
        + "R-2,10.00,u-2,,2026-01-20T10:00:00Z\n"  # 7
        + "R-3,20.00,u-1,,2026-01-20T10:00:00Z\n"  # 8: u-1's second payment of the file
        + "R-3,20.00,u-2,,2026-01-20T10:00:00Z\n"  # 9: the same reference for another user
        # A row refused as overpayment records nothing: its reference is still free.
        + "O-1,1000.00,u-1,,2026-01-21T10:00:00Z\n"  # 10: more than u-1 owes ...
        + "O-1,1000.00,u-1,,2026-01-21T10:00:00Z\n"  # 11: ... again: refused again, as in a re-run
        + "O-2,500.00,u-2,,2026-01-21T10:00:00Z\n"  # 12: more than u-2 owes ...
        + "O-2,5.00,u-2,,2026-01-21T10:00:00Z\n"  # 13: ... corrected, same reference: applied
        + "O-2,5.00,u-2,,2026-01-21T10:00:00Z\n"  # 14: line 13's payment again
        + "X-1,1.00,u-2,,2026-01-21T10:00:00Z\n"  # 15
        + "C-1,1.00,u-2,,2026-01-21T10:00:00Z\n"  # 16: u-2's 8th row of the file ...
        + "C-1,1.00,u-1,,2026-01-21T10:00:00Z\n"  # 17: ... for u-1 (its 7th): judged after 16
    )
    rejects = tmp_path / "rejects.csv"
    outcomes = {}
    states = {}
    for rows in (100, 1):
        _reset(engine)
        seed(engine, 2, date(2026, 1, 1))
        cli.chunks(payments=rows)
        result = cli("payments", "import", str(source), "--rejects", str(rejects))
        assert result.exit_code == 5, result.stderr
        outcomes[rows], states[rows] = _outcomes(rejects), _state(engine)
        _verify_clean(cli)

    assert outcomes[1] == outcomes[100] == {
        3: "duplicate", 4: "conflict", 5: "unknown_user", 7: "duplicate", 9: "conflict",
        10: "overpayment", 11: "overpayment", 12: "overpayment", 14: "duplicate",
        17: "conflict",
    }  # fmt: skip
    assert states[1] == states[100]
    assert [(row[0], row[1]) for row in states[1]["payments"]] == [
        ("C-1", "1.00"), ("O-2", "5.00"), ("R-1", "10.00"), ("R-2", "10.00"),
        ("R-3", "20.00"), ("X-1", "1.00"),
    ]  # fmt: skip


# A payments file of few references and users, so that references repeat across users,
# amounts overpay and rows name installments (1-9: u-1's are 1-3 after a reset).
payment_rows = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C", "D"]),
        st.sampled_from(["5.00", "50.00", "150.00", "400.00"]),
        st.one_of(
            st.sampled_from(["u-1", "u-2", "u-3", "nobody"]).map(lambda user: f"{user},"),
            st.integers(min_value=1, max_value=10).map(lambda installment: f",{installment}"),
        ),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=payment_rows)
def test_any_file_ends_the_same_one_row_per_chunk_or_in_one_chunk(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[tuple[str, str, str]],
) -> None:
    """PRODUCT.md: a large file gives the same outcomes whatever its size and however it
    is read; one row per chunk is each row judged after everything before it."""
    source = tmp_path / "any.csv"
    source.write_text(
        HEADER + "".join(f"{ref},{amount},{to},2026-01-21T10:00:00Z\n" for ref, amount, to in rows)
    )
    rejects = tmp_path / "any-rejects.csv"
    ends = []
    for chunk_rows in (1, 100):
        _reset(engine)
        seed(engine, 3, date(2026, 1, 1))
        cli.chunks(payments=chunk_rows)
        result = cli("payments", "import", str(source), "--rejects", str(rejects))
        assert result.exit_code in (0, 5), result.stderr
        ends.append((_outcomes(rejects) if rejects.exists() else {}, _state(engine)))
        rejects.unlink(missing_ok=True)
        _verify_clean(cli)
    assert ends[0] == ends[1]


def test_one_reference_shared_by_every_row_is_taken_by_the_first(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A processor that puts its batch id in ``reference``: each row must come after the
    one before it (its reference), which once made a chunk's rounds grow with the cube
    of its rows. The first row takes the reference; the rest are judged against it."""
    seed(engine, 40, date(2026, 1, 1))
    source = tmp_path / "batch-id.csv"
    source.write_text(HEADER + "".join(f"BATCH-1,10.00,u-{n % 40 + 1},,\n" for n in range(1200)))

    result = cli("payments", "import", str(source), "-o", "json")

    summary = json.loads(result.stdout)
    assert (summary["applied"], summary["duplicate"], summary["conflict"]) == (1, 29, 1170)
    _verify_clean(cli)


def test_a_payments_file_racing_sweeps_leaves_every_invariant(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(engine, 30, date(2026, 1, 1), plans_per_user=2)
    cli.chunks(payments=7)
    source = tmp_path / "race.csv"
    source.write_text(
        HEADER + "".join(f"R-{n},{60 + n % 50}.00,u-{n % 30 + 1},,\n" for n in range(90))
    )

    def sweeps() -> None:
        for day in range(1, 28):
            run_sweep(as_of=date(2026, 2, day), dry_run=False, actor="sweeper")

    sweeper = Worker(sweeps)
    sweeper.start()
    result = cli("payments", "import", str(source), "-o", "json")
    sweeper.join(timeout=120)

    assert sweeper.error is None
    assert result.exit_code in (0, 5), result.stderr
    summary = json.loads(result.stdout)
    assert summary["applied"] + summary["overpayment"] == 90
    assert row_counts(engine)["payments"] == summary["applied"]
    _verify_clean(cli)
