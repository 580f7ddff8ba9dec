"""``bnplctl demo``: loads the sample users, shows them masked, safe to run twice."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts


def test_demo_twice_changes_nothing_the_second_time(cli: Cli, engine: Engine) -> None:
    first = cli("demo", "--allow-external")
    assert first.exit_code == 0, first.stderr
    assert "4111 **** **** 1111" in first.stdout and "+998****4567" in first.stdout
    assert "card: fails the Luhn check" in first.stderr
    after_first = row_counts(engine)
    assert (after_first["users"], after_first["plans"], after_first["sweep_runs"]) == (3, 3, 1)
    with engine.connect() as connection:
        statuses: dict[str, str] = dict(
            connection.execute(text("SELECT user_id, status FROM users")).all()
        )
        plans: dict[str, str] = dict(
            connection.execute(text("SELECT merchant_reference, status FROM plans")).all()
        )
    assert statuses == {"usr-001": "DEBT_USER", "usr-002": "NORMAL", "usr-003": "NORMAL"}
    assert plans == {"DEMO-LATE": "ACTIVE", "DEMO-NEW": "ACTIVE", "DEMO-PAID": "COMPLETED"}
    assert "usr-001 is DEBT_USER since" in first.stdout and "healthy" in first.stdout
    assert "partial payment DEMO-PART-1: 50.00 of installment" in first.stderr
    # DEMO-PAID paid in full (3), the partial payment, the sample file's two.
    assert after_first["payments"] == 6
    assert "Sample payments file" in first.stdout
    with engine.connect() as connection:
        refunds: dict[str, str] = dict(
            connection.execute(text("SELECT transaction_id, status FROM refunds")).all()
        )
    assert refunds == {"REF-001": "COMPLETED", "REF-002": "REJECTED", "REF-003": "PENDING"}
    with engine.connect() as connection:
        kinds = connection.execute(text("SELECT kind FROM ingested_files ORDER BY id")).scalars()
        assert list(kinds) == ["webhooks", "payments"]  # both sample files, in the ledger

    second = cli("demo", "--allow-external")
    assert second.exit_code == 0
    assert row_counts(engine) == after_first
    assert "duplicate" in second.stdout
    assert "already swept for" in second.stderr
    assert "the sample webhook file was ingested before" in second.stderr
    assert "DEMO-PART-1 was recorded before" in second.stderr
    assert "the sample payments file was imported before" in second.stderr


def test_demo_refuses_an_external_database_without_the_flag(cli: Cli, engine: Engine) -> None:
    result = cli("demo")
    assert result.exit_code == 78
    assert "unset BNPL_DATABASE_URL" in result.stderr
    assert row_counts(engine)["users"] == 0
