"""Attacks on rule 12 (payment reversals) and the processors' presets, found by hand
(an attacker pass): each test failed before its fix."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli
from tests.test_sweep import seed

TODAY = date.today()

ADYEN_HEADER = (
    "Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,"
    "Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),"
    "Gross Credit (GC),Batch Number"
)


def _adyen(psp: str, target: str, kind: str, modification: str, debit: str, credit: str) -> str:
    return (
        f"BnplCo,BnplCoEUR,{psp},{target},visa,2026-06-02 10:00:00,CET,{kind},"
        f"{modification},EUR,{debit},{credit},1"
    )


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def test_a_kind_column_in_our_own_layout_is_never_booked_as_a_payment(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A file of our own layout with ``kind``/``original_reference`` columns: with any
    ``--map`` the reversal row takes money back; without one the same row is *paid in*
    (the customer is credited what the processor took back), exit 0, nothing said."""
    seed(engine, 1, TODAY + timedelta(days=10))
    path = tmp_path / "own.csv"
    path.write_text(
        "reference,user_id,amount,kind,original_reference\n"
        "K1,u-1,10.00,payment,\n"
        "K2,u-1,10.00,reversal,K1\n"
    )
    result = cli("payments", "import", str(path), "-o", "json")
    summary = json.loads(result.stdout)
    # K2 must not be a second payment of 10.00 (either a reversal, or refused).
    assert summary["applied"] == 1, summary
    assert _scalar(engine, "SELECT count(*) FROM payments") == 1


def test_a_header_naming_a_column_twice_by_inner_spaces_is_invalid(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """The preset compares names with runs of blanks collapsed, the duplicate check
    without: ``Gross Credit (GC)`` and ``Gross  Credit  (GC)`` are one column to the
    preset, and the last one's amount is booked silently."""
    seed(engine, 1, TODAY + timedelta(days=10))
    path = tmp_path / "adyen.csv"
    path.write_text(
        ADYEN_HEADER
        + ",Gross  Credit  (GC)\n"
        + _adyen("D1", "u-1", "Settled", "M1", "", "1.00")
        + ",99.00\n"
    )
    result = cli("payments", "import", str(path), "--preset", "adyen-settlement")
    assert result.exit_code == 65, (result.exit_code, result.stderr)
    assert _scalar(engine, "SELECT count(*) FROM payments") == 0


@pytest.mark.parametrize("chunk_rows", [1, 5000])
def test_a_reversal_before_its_payment_in_the_file_is_applied_after_the_file(
    cli: Cli, engine: Engine, tmp_path: Path, chunk_rows: int
) -> None:
    """A reversal before its payment in the file (in its chunk, or a chunk before) is
    put off until the file's last chunk has been applied, then reversed: one clean run
    ends as a run killed and run again does (the attacker's kill and re-run reversed 31
    chargebacks a clean run had left ``unknown_payment``); a dry run says the same; run
    again, every row is a duplicate. A reversal whose payment is nowhere stays
    ``unknown_payment``."""
    seed(engine, 1, TODAY + timedelta(days=10))
    cli.chunks(payments=chunk_rows)
    path = tmp_path / "adyen.csv"
    path.write_text(
        "\n".join(
            [
                ADYEN_HEADER,
                _adyen("A2", "u-1", "Refunded", "RF-A2", "10.00", ""),
                _adyen("A9", "u-1", "Refunded", "RF-A9", "10.00", ""),
                _adyen("A2", "u-1", "Settled", "M-A2", "", "50.00"),
            ]
        )
        + "\n"
    )
    command = ("payments", "import", str(path), "--preset", "adyen-settlement", "-o", "json")
    dry = json.loads(cli(*command, "--dry-run").stdout)
    first = cli(*command)
    summary = json.loads(first.stdout)
    picked = ("applied", "reversed", "unknown_payment", "duplicate")
    assert [summary[name] for name in picked] == [1, 1, 1, 0], summary
    assert [dry[name] for name in picked] == [1, 1, 1, 0], dry
    assert summary["rejected"] == [
        {"file": str(path), "line": 3, "reference": "RF-A9", "outcome": "unknown_payment",
         "reason": "no payment with reference A9"}
    ]  # fmt: skip
    assert _scalar(engine, "SELECT amount_due::text FROM installments WHERE id = 1") == "60.00"
    again = json.loads(cli(*command).stdout)
    assert [again[name] for name in picked] == [0, 0, 1, 2], again
    assert _scalar(engine, "SELECT count(*) FROM payment_reversals") == 1
    assert cli("verify").exit_code == 0


def test_a_sweep_that_marked_nothing_but_holds_a_reversals_overdue_can_be_reverted(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A reversal after a sweep that marked nothing makes a past-due installment OVERDUE
    with that run as its ``sweep_run``; docs/commands.md: "so `debt sweep --revert` of
    that run undoes it as it undoes what the run marked". The revert is refused: "it
    marked nothing (there is nothing to undo)", and the debtor stays one."""
    seed(engine, 1, TODAY - timedelta(days=40))  # due 40 and 10 days ago, and in 20 days
    path = tmp_path / "pay.csv"
    path.write_text("reference,user_id,amount\nP1,u-1,300.00\n")
    assert cli("payments", "import", str(path)).exit_code == 0
    sweep = cli("debt", "sweep", "-o", "json")
    run_id = json.loads(sweep.stdout)["run_id"]
    assert json.loads(sweep.stdout)["installments_marked_overdue"] == 0
    assert cli("payments", "reverse", "P1", "--reference", "CB-1").exit_code == 0
    assert _scalar(engine, "SELECT status FROM users") == "DEBT_USER"
    assert (
        _scalar(engine, f"SELECT count(*) FROM installments WHERE overdue_run_id = {run_id}") == 2
    )
    result = cli("debt", "sweep", "--revert", str(run_id))
    assert result.exit_code == 0, result.stderr
    assert _scalar(engine, "SELECT status FROM users") == "NORMAL"


def test_payments_reverse_prints_its_data_in_every_output_format(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """``-o csv`` (and table, wide) print nothing on stdout: only ``-o json``/``jsonl``
    render the reversal; a script asking for CSV gets an empty document, exit 0."""
    seed(engine, 1, TODAY + timedelta(days=10))
    path = tmp_path / "pay.csv"
    path.write_text("reference,user_id,amount\nP1,u-1,150.00\n")
    assert cli("payments", "import", str(path)).exit_code == 0
    result = cli("payments", "reverse", "P1", "--reference", "CB-1", "--amount", "10.00",
                 "-o", "csv")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "CB-1" in result.stdout, (result.stdout, result.stderr)
