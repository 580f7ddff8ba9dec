"""The benchmark: its plain-SQL references run on exact copies of the product's tables;
a small run reports every figure, the terminal's among them, against their targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.run import (
    CLI_RUNS,
    CLI_TARGETS_S,
    HELP_RATIO_TARGET,
    STATISTICS_RATIO_TARGET,
    STATISTICS_STATES,
    cli_figures,
    copy_tables,
    drop_tables,
    fresh_database,
    measure,
    render_table,
    table_shape,
)
from tests.conftest import DatabaseUnderTest


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
    assert "unanalysed_ratio" in table
