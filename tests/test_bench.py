"""The benchmark: its plain-SQL references run on exact copies of the product's tables;
a small run reports every figure, the terminal's among them, against their targets."""

from __future__ import annotations

import csv
import tracemalloc
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.run import (
    ADYEN_COLUMNS,
    ADYEN_PRESET,
    CLI_RUNS,
    CLI_TARGETS_S,
    HELP_RATIO_TARGET,
    KEYS_PEAK_RSS_MB_TARGET,
    KEYS_USERS_PER_S_TARGET,
    KEYS_WRITES_RATIO_TARGET,
    PRESET_COPIES,
    PRESET_WRITES_RATIO_TARGET,
    STATISTICS_RATIO_TARGET,
    STATISTICS_STATES,
    SettlementFile,
    bulk_setup,
    cli_figures,
    copy_tables,
    drop_tables,
    fresh_database,
    measure,
    reference_preset_writes,
    render_table,
    table_shape,
    write_adyen_settlement,
    write_users,
)
from bnplctl import crypto
from bnplctl.importing.presets import SettlementRow, read_settlement
from tests.conftest import Cli, DatabaseUnderTest


def _within_rounding(ratio: float, numerator: float, denominator: float) -> bool:
    """Whether ``ratio`` (rounded to 2 places) can be numerator / denominator before both
    were rounded to 3 places: for figures of a few hundredths of a second the rounding
    of the seconds alone moves their ratio by several hundredths."""
    low = (numerator - 0.0005) / (denominator + 0.0005)
    high = (numerator + 0.0005) / (denominator - 0.0005)
    return low - 0.005 <= ratio <= high + 0.005


# Every table a reference copies, and a table it does not copy (for the negative check).
COPIED = ("users", "installments", "refunds", "audit_events", "webhook_events")


def test_reference_copies_have_the_tables_shape(engine: Engine) -> None:
    copy_tables(engine, "ref_", COPIED[:3], COPIED[3:])
    try:
        with engine.connect() as connection:
            for table in COPIED:
                source, copy = (
                    table_shape(connection, table),
                    table_shape(connection, f"ref_{table}"),
                )
                assert source == copy, table
                assert source["indexes"] and source["constraints"], table
            # The storage parameters that make the product's updates heap-only are there.
            reloptions = table_shape(connection, "ref_refunds")["reloptions"]
            assert "fillfactor=50" in reloptions
            assert "fillfactor=85" in table_shape(connection, "ref_installments")["reloptions"]
    finally:
        drop_tables(engine, "ref_", COPIED)


def test_table_shape_sees_a_missing_storage_parameter(engine: Engine) -> None:
    """The comparison is not vacuous: a plain LIKE copy (the old references) differs."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE like_refunds (LIKE refunds INCLUDING ALL)"))
        try:
            assert table_shape(connection, "refunds") != table_shape(connection, "like_refunds")
        finally:
            connection.execute(text("DROP TABLE like_refunds"))


def test_cli_targets_compare_the_reported_figures(no_database: None) -> None:
    at_the_limit = dict(CLI_TARGETS_S)
    figures = cli_figures(HELP_RATIO_TARGET * 0.2, 0.2, at_the_limit)
    assert figures["help_ratio"] == HELP_RATIO_TARGET
    assert all(figures["targets"].values()), figures
    over = cli_figures(0.31, 0.2, {name: limit + 0.001 for name, limit in at_the_limit.items()})
    assert over["targets"] == dict.fromkeys([*CLI_TARGETS_S, "help_ratio"], False)


ADYEN_FIXTURE = (
    Path(__file__).resolve().parent
    / "data"
    / "processors"
    / "adyen_settlement_detail_report_batch_118.csv"
)


def _settlement_rows(path: Path) -> list[SettlementRow]:
    with path.open("rb") as stream:
        return list(read_settlement(stream, preset=ADYEN_PRESET))


def test_the_adyen_file_is_laid_out_as_adyen_writes_it(no_database: None, tmp_path: Path) -> None:
    """The fixture's layout (the header, byte for byte, with its byte-order mark and CRLF
    line ends); row types in the issue's proportions; the same file every time."""
    path = tmp_path / "adyen.csv"
    written = write_adyen_settlement(path, 2000)
    assert written == SettlementFile(rows=2000, payments=1900, reversals=60, skipped=40)
    content = path.read_bytes()
    assert content.split(b"\n", 1)[0] == ADYEN_FIXTURE.read_bytes().split(b"\n", 1)[0]
    assert content.startswith(b"\xef\xbb\xbf")
    assert content.count(b"\n") == content.count(b"\r\n") == 2001
    with path.open(encoding="utf-8-sig", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert tuple(records[0]) == ADYEN_COLUMNS
    types = Counter(record["Type"] for record in records)
    assert types == {
        "Settled": 1900, "Refunded": 40, "Chargeback": 20, "Fee": 20, "MerchantPayout": 20,
    }  # fmt: skip
    for record in records:
        money = record["Type"] not in ("Fee", "MerchantPayout")
        # Exactly one gross column filled on customer money, none on the others.
        filled = [record["Gross Debit (GC)"], record["Gross Credit (GC)"]]
        assert sorted(map(bool, filled)) == ([False, True] if money else [False, False])
        assert bool(record["Psp Reference"]) == money
        assert bool(record["Merchant Reference"]) == money
        assert record["TimeZone"] in ("CEST", "Europe/Amsterdam")
    # Paid by the workload's users, each once (N rows for N users).
    payers = [record["Merchant Reference"] for record in records if record["Type"] == "Settled"]
    assert len(set(payers)) == len(payers) and set(payers) <= {f"u{n:07d}" for n in range(2000)}
    again = tmp_path / "again.csv"
    assert write_adyen_settlement(again, 2000) == written
    assert again.read_bytes() == content
    # Fewer rows than a cycle, or more users than rows: the same proportions, per cycle.
    assert write_adyen_settlement(path, 50_000, rows=250) == SettlementFile(250, 240, 6, 4)
    assert write_adyen_settlement(path, 10, rows=90) == SettlementFile(90, 90, 0, 0)


def test_the_adyen_file_reads_through_its_preset(no_database: None, tmp_path: Path) -> None:
    """The product's reader takes every row: payments, reversals and skipped rows, no
    error; every reversal takes back at most what is left of a payment recorded earlier
    in the file, under a reference of its own."""
    path = tmp_path / "adyen.csv"
    written = write_adyen_settlement(path, 3000)
    rows = _settlement_rows(path)
    assert [row.error for row in rows if row.error is not None] == []
    assert len(rows) == written.rows
    assert Counter((row.kind, row.row_type, row.skip_reason) for row in rows) == {
        ("payment", "Settled", None): 2850,
        ("reversal", "Refunded", None): 60,
        ("reversal", "Chargeback", None): 30,
        ("skipped", "Fee", "fee"): 30,
        ("skipped", "MerchantPayout", "payout"): 30,
    }
    left: dict[str, Decimal] = {}  # each payment seen so far: what is left of it
    references: set[str | None] = set()
    for row in rows:
        if row.kind == "payment":
            assert row.amount is not None and Decimal("10.00") <= row.amount < Decimal("50.00")
            assert row.currency == "EUR" and row.target is not None
            left[str(row.reference)] = row.amount
        elif row.kind == "reversal":
            assert row.original_reference in left, row  # a payment earlier in the file
            assert row.amount is not None and 0 < row.amount <= left[row.original_reference]
            left[row.original_reference] -= row.amount
            assert row.reference not in references and row.reference not in left
        references.add(row.reference)
    occurred = [row.occurred_at for row in rows if row.occurred_at is not None]
    assert occurred == sorted(occurred)  # a reversal after its payment


def test_the_adyen_file_is_written_as_generated(no_database: None, tmp_path: Path) -> None:
    """Flat memory: 100,000 rows are written with no more held than a few rows."""
    tracemalloc.start()
    try:
        write_adyen_settlement(tmp_path / "adyen.csv", 100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_the_preset_reference_writes_what_the_file_requires(
    engine: Engine, cli: Cli, tmp_path: Path
) -> None:
    """W(200) and its 200-row Adyen file: the reference records 190 payments, each
    allocated, and 6 reversals, each undoing part of an allocation; one audit row each;
    the installments lowered by the payments net of the reversals."""
    users = tmp_path / "users.csv"
    write_users(users, 200)
    assert cli("users", "import", str(users)).exit_code == 0
    bulk_setup(engine, 200)
    path = tmp_path / "adyen.csv"
    assert write_adyen_settlement(path, 200) == SettlementFile(200, 190, 6, 4)
    rows = _settlement_rows(path)
    paid = sum(row.amount or 0 for row in rows if row.kind == "payment")
    reversed_ = sum(row.amount or 0 for row in rows if row.kind == "reversal")
    with engine.connect() as connection:
        audit_before = connection.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
    try:
        seconds = reference_preset_writes(engine, path, keep=True)
        with engine.connect() as connection:

            def scalar(query: str) -> object:
                return connection.execute(text(query)).scalar_one()

            assert seconds > 0
            assert scalar("SELECT count(*) FROM refa_payments") == 190
            assert scalar("SELECT count(*) FROM refa_payment_allocations") == 190
            assert scalar("SELECT count(*) FROM refa_payment_reversals") == 6
            assert scalar("SELECT count(*) FROM refa_reversal_allocations") == 6
            assert scalar("SELECT sum(amount) FROM refa_payments") == paid
            assert scalar("SELECT sum(amount) FROM refa_payment_reversals") == reversed_
            # Each reversal undoes part of its own payment's allocation, nothing more.
            assert (
                scalar(
                    "SELECT count(*) FROM refa_reversal_allocations ra"
                    " JOIN refa_payment_reversals r ON r.id = ra.reversal_id"
                    " JOIN refa_payment_allocations a ON a.payment_id = r.payment_id"
                    " AND a.installment_id = ra.installment_id AND ra.amount <= a.amount"
                )
                == 6
            )
            assert (
                scalar("SELECT sum(original_amount - amount_due) FROM refa_installments")
                == paid - reversed_
            )
            assert scalar("SELECT count(*) FROM refa_audit_events") == audit_before + 196
            actions = connection.execute(
                text(
                    "SELECT action, count(*) FROM refa_audit_events"
                    " WHERE actor = 'bench' GROUP BY action"
                )
            ).all()
            assert dict(actions) == {"payment.recorded": 190, "payment.reversed": 6}
            # The product's tables are untouched.
            assert scalar("SELECT count(*) FROM payments") == 0
            assert scalar("SELECT count(*) FROM payment_reversals") == 0
    finally:
        drop_tables(engine, "refa_", PRESET_COPIES)


def test_a_small_bench_reports_the_terminal_figures(
    test_database: DatabaseUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W(2000) end to end: every ``cli`` figure is there and positive, each target is
    judged on the figure reported, and the ``plans create`` runs timed made their plans,
    on a user the sweep left NORMAL (the timing is of a real plan, not of a refusal)."""
    with fresh_database(test_database.server_url, "bnpl_bench_test", tmp_path) as (url, env):
        monkeypatch.setenv("BNPL_DATABASE_URL", url)  # ``debt show`` is also timed in process
        report = measure(2000, url, env, tmp_path, test_database.server_url)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                created = connection.execute(
                    text(
                        "SELECT p.id, p.user_id, u.status, p.total_amount, p.installment_count,"
                        " (SELECT count(*) FROM installments i WHERE i.plan_id = p.id)"
                        " FROM audit_events a JOIN plans p ON p.id = CAST(a.entity_id AS bigint)"
                        " JOIN users u ON u.user_id = p.user_id WHERE a.action = 'plan.created'"
                    )
                ).all()
                debtor_overdue = connection.execute(
                    text(
                        "SELECT count(*) FROM installments"
                        " WHERE user_id = 'u0000001' AND status = 'OVERDUE'"
                    )
                ).scalar_one()
        finally:
            engine.dispose()

    # The users file again, every row a minor: all rejected, the first 1,000 listed.
    refused = report["import_users_rejected"]
    assert (refused["rows"], refused["rejected_listed"]) == (2000, 1000)
    assert refused["peak_rss_mb"] > 0

    # The payments file: one per user but 2 % repeated rows and 2 % unknown users.
    payments = report["payments"]
    assert (payments["rows"], payments["applied"]) == (2000, 1920)
    # The figures are rounded (seconds to 3 places, ratios to 2) from the same timings.
    assert _within_rounding(
        payments["writes_ratio"], payments["seconds"], payments["writes_reference_seconds"]
    )
    assert report["verify"]["ok"] is True  # after the payments too

    # The same file on copies of W(N) bulk-loaded: analysed, never analysed, and analysed
    # after a dry run (the payments table held only rolled-back rows): the same outcome,
    # each state's ratio to the analysed run judged on the figures reported.
    planner = report["payments_statistics"]
    assert (planner["applied"], planner["same_outcome"]) == (1920, True)
    for state in STATISTICS_STATES[1:]:
        assert _within_rounding(
            planner[f"{state}_ratio"], planner[f"{state}_seconds"], planner["analysed_seconds"]
        )
    assert planner["targets"] == {
        f"{state}_ratio": planner[f"{state}_ratio"] <= STATISTICS_RATIO_TARGET
        for state in STATISTICS_STATES[1:]
    }
    # The Adyen settlement file, 2000 rows, with its preset on a fresh copy of W(N): each
    # payment applied, each reversal reversed, each fee and payout skipped; the writes
    # ratio and its target judged on the figures reported.
    preset = report["payments_preset"]
    assert {name: preset[name] for name in ("rows", "applied", "reversed", "skipped")} == {
        "rows": 2000, "applied": 1900, "reversed": 60, "skipped": 40,
    }  # fmt: skip
    assert preset["peak_rss_mb"] > 0
    assert _within_rounding(
        preset["writes_ratio"], preset["seconds"], preset["writes_reference_seconds"]
    )
    assert preset["targets"] == {
        "writes_ratio": preset["writes_ratio"] <= PRESET_WRITES_RATIO_TARGET
    }
    # Every passport re-encrypted under a new key on a fresh copy of W(N), with a copy of
    # the key file (the run's own is never rotated): the figures and the targets judged on
    # the figures reported.
    keys = report["keys"]
    assert keys["users"] == 2000 and keys["peak_rss_mb"] > 0
    # From the unrounded seconds: within what rounding them to 3 places moves it.
    seconds = keys["seconds"]
    assert (
        2000 / (seconds + 0.0005) - 1 <= keys["users_per_second"] <= 2000 / (seconds - 0.0005) + 1
    )
    assert _within_rounding(keys["writes_ratio"], keys["seconds"], keys["writes_reference_seconds"])
    assert keys["targets"] == {
        "users_per_second": keys["users_per_second"] >= KEYS_USERS_PER_S_TARGET,
        "peak_rss_mb": keys["peak_rss_mb"] <= KEYS_PEAK_RSS_MB_TARGET,
        "writes_ratio": keys["writes_ratio"] <= KEYS_WRITES_RATIO_TARGET,
    }
    the_key = crypto.read_keyring(tmp_path / "secret.key")
    assert the_key is not None and [entry.key_id for entry in the_key.entries] == [0]
    server = create_engine(test_database.server_url)
    try:
        with server.connect() as connection:
            copies_left = connection.execute(
                text("SELECT count(*) FROM pg_database WHERE starts_with(datname, :name)"),
                {"name": make_url(url).database},
            ).scalar_one()
    finally:
        server.dispose()
    assert copies_left == 0  # the copies are dropped with the bench's database

    cli = report["cli"]
    timed = ["help_s", "typer_import_s", "help_ratio", *CLI_TARGETS_S]
    for name in timed:
        assert isinstance(cli[name], float) and cli[name] > 0, (name, cli[name])
    assert _within_rounding(cli["help_ratio"], cli["help_s"], cli["typer_import_s"])
    assert cli["targets"] == {
        **{name: cli[name] <= limit for name, limit in CLI_TARGETS_S.items()},
        "help_ratio": cli["help_ratio"] <= HELP_RATIO_TARGET,
    }
    assert all(isinstance(met, bool) for met in cli["targets"].values())
    # One plan per timed run, all of one NORMAL user, as asked: 300.00 in 3 installments.
    assert len(created) == CLI_RUNS
    assert {row[1:] for row in created} == {(created[0][1], "NORMAL", 300, 3, 3)}
    assert debtor_overdue > 0  # ``debt show``'s subject has something to show
    table = render_table(report)
    assert "plans_create_s" in table and "help_ratio" in table and "targets (" in table
    assert "unanalysed_ratio" in table and "payments_preset" in table
    assert "users_per_second" in table
