"""Rule 9 under concurrency: the lock protocol, ``bnplctl verify``, and a soak of every
writer at once."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.soak import Soak
from bnplctl.services import locks
from bnplctl.services.installments import pay
from tests.conftest import Cli, DatabaseUnderTest
from tests.helpers import run_sweep, unit
from tests.test_concurrency import Worker, _wait_until_blocked
from tests.test_sweep import seed


def _verify(cli: Cli) -> dict[str, Any]:
    result = cli("verify", "-o", "json")
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 69)
    return report


def _violations(cli: Cli) -> dict[str, tuple[int, list[str]]]:
    return {c["check"]: (c["violations"], c["examples"]) for c in _verify(cli)["checks"]}


def _pay(*installment_ids: int) -> dict[str, Any]:
    with unit() as work:
        session = work.session
        return pay(session, list(installment_ids), actor="test")


def test_verify_is_clean_on_a_consistent_database(cli: Cli, engine: Engine) -> None:
    seed(engine, 3, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t")
    _pay(1)
    report = _verify(cli)
    assert report["ok"] is True
    assert [c["check"] for c in report["checks"]] == [
        "debt_status",
        "plan_status",
        "plan_totals",
        "refund_cuts",
        "refund_amounts",
        "payment_cuts",
        "amounts",
    ]
    table = cli("verify")
    assert table.exit_code == 0 and "debt_status" in table.stdout


@pytest.mark.parametrize(
    ("check", "sabotage", "example"),
    [
        ("debt_status", "UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'u-2'", "u-2"),
        ("plan_status", "UPDATE plans SET status = 'COMPLETED' WHERE id = 3", "3"),
        ("plan_totals", "UPDATE plans SET total_amount = 301 WHERE id = 2", "2"),
        (
            "refund_cuts",
            "UPDATE installments SET amount_due = 90 WHERE plan_id = 2 AND sequence = 1",
            "2",
        ),
        (
            "refund_amounts",
            "INSERT INTO refunds (user_id, transaction_id, amount, status, applied_amount,"
            " payout_amount) VALUES ('u-1', 'R-BAD', 10, 'COMPLETED', 4, 4)",
            "R-BAD",
        ),
    ],
)
def test_verify_finds_each_broken_invariant(
    cli: Cli, engine: Engine, check: str, sabotage: str, example: str
) -> None:
    seed(engine, 3, date(2026, 1, 1))
    with engine.begin() as connection:
        connection.execute(text(sabotage))
    found = _violations(cli)
    assert found[check] == (1, [example])
    assert all(count == 0 for name, (count, _) in found.items() if name != check)
    result = cli("verify")
    assert result.exit_code == 69
    assert f"invariants broken: {check}" in result.stderr


def test_verify_finds_amounts_that_constraints_would_refuse(cli: Cli, engine: Engine) -> None:
    """``amounts`` holds even where the schema's CHECK constraints were dropped."""
    seed(engine, 1, date(2026, 1, 1))
    drop = "ALTER TABLE installments DROP CONSTRAINT ck_installments_paid_when_nothing_due"
    with engine.begin() as connection:
        connection.execute(text(drop))
        connection.execute(text("UPDATE installments SET amount_due = 0 WHERE id = 2"))
    try:
        assert _violations(cli)["amounts"] == (1, ["installment 2"])
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE installments SET amount_due = 100 WHERE id = 2"))
            connection.execute(
                text(
                    "ALTER TABLE installments ADD CONSTRAINT"
                    " ck_installments_paid_when_nothing_due"
                    " CHECK ((status = 'PAID') = (amount_due = 0))"
                )
            )


def test_a_sweep_held_up_while_a_payment_clears_an_older_installment(
    cli: Cli, engine: Engine
) -> None:
    """The interleaving that once left a debtor NORMAL: a sweep is held up (here by a
    writer in flight for another user) while the customer pays an older OVERDUE
    installment. Whatever order the lock protocol gives them, the customer ends DEBT_USER
    (the sweep's newer OVERDUE installment) and gets no new plan."""
    seed(engine, 2, date(2026, 1, 1))  # u-1: installments 1-3, u-2: 4-6, due 01-01, 01-31, 03-02
    run_sweep(as_of=date(2026, 1, 15), dry_run=False, actor="t")  # installment 1 OVERDUE
    with engine.connect() as holder, engine.connect() as observer:
        locks.for_user_writes(holder, ["u-2"])  # a plans create for u-2, in flight
        sweeper = Worker(lambda: run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t"))
        sweeper.start()
        _wait_until_blocked(observer)
        payer = Worker(lambda: _pay(1))
        payer.start()
        observer.execute(text("SELECT pg_sleep(0.3)"))
        holder.commit()
        sweeper.join(30)
        payer.join(30)
    assert sweeper.error is None and payer.error is None
    assert sweeper.result.installments_marked_overdue == 2  # installments 2 and 5
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM users WHERE user_id = 'u-1'")
        ).scalar_one()
    assert status == "DEBT_USER"
    refused = cli("plans", "create", "--user", "u-1", "--amount", "50", "--start", "2026-02-15")
    assert refused.exit_code == 3
    assert "DEBT_USER" in refused.stderr
    assert _verify(cli)["ok"] is True


def test_two_payments_of_one_debtor_at_once_restore_them(cli: Cli, engine: Engine) -> None:
    """Write skew: each payment alone leaves the other OVERDUE installment, so neither would
    restore the user if both decided on what they saw before the other committed."""
    seed(engine, 1, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t")  # 1 and 2 OVERDUE
    with engine.connect() as holder, engine.connect() as observer:
        locks.for_user_writes(holder, ["u-1"])
        first, second = Worker(lambda: _pay(1)), Worker(lambda: _pay(2))
        first.start()
        second.start()
        _wait_until_blocked(observer)
        observer.execute(text("SELECT pg_sleep(0.3)"))
        holder.commit()
        first.join(30)
        second.join(30)
    assert first.error is None and second.error is None
    restored = first.result["users_restored"] + second.result["users_restored"]
    assert restored == ["u-1"]
    assert _verify(cli)["ok"] is True


def test_a_command_and_a_webhook_approval_leave_the_same_audit_trail(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    seed(engine, 2, date(2026, 1, 1))
    for user, plan, transaction in (("u-1", 1, "CMD-1"), ("u-2", 2, "HOOK-1")):
        created = cli("refunds", "create", "--user", user, "--transaction-id", transaction,
                      "--amount", "150.50", "--plan", str(plan))  # fmt: skip
        assert created.exit_code == 0, created.stderr
    assert cli("refunds", "approve", "CMD-1").exit_code == 0
    source = tmp_path / "hook.csv"
    source.write_text("refund_id,status,merchant_reference,event_id\nHOOK-1,approved,M,e-1\n")
    assert cli("webhooks", "ingest", str(source)).exit_code == 0
    with engine.connect() as connection:
        trail = connection.execute(
            text(
                "SELECT user_id, action, entity, details FROM audit_events"
                " WHERE user_id IN ('u-1', 'u-2') AND action <> 'refund.created' ORDER BY id"
            )
        ).all()
    by_user: dict[str, list[tuple[str, str, dict[str, Any]]]] = {"u-1": [], "u-2": []}
    channel_fields = ("source", "file_id", "line", "event_id", "plan_id")
    for user, action, entity, details in trail:
        kept = {k: v for k, v in details.items() if k not in channel_fields}
        by_user[user].append((action, entity, kept))
    assert by_user["u-1"] == by_user["u-2"]
    assert by_user["u-1"][0] == (
        "refund.status_changed",
        "refund",
        {"from": "PENDING", "to": "COMPLETED", "applied_amount": "150.50",
         "payout_amount": "0.00"},
    )  # fmt: skip
    with engine.connect() as connection:
        states = connection.execute(
            text("SELECT status, applied_amount, payout_amount FROM refunds ORDER BY id")
        ).all()
    assert states[0] == states[1]


@pytest.mark.slow
def test_every_writer_at_once_keeps_rule_9(
    test_database: DatabaseUnderTest, tmp_path: Path, key_file: Path
) -> None:
    """Sweeps for several dates, payments and their reversals, refunds and their moves,
    webhook files, plans and imports from four workers at once, as real processes: every
    command ends with a documented exit code and ``verify`` is clean."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNPL_")}
    env |= {
        "BNPL_DATABASE_URL": test_database.url,
        "BNPL_DATA_DIR": str(tmp_path / "data"),
        "BNPL_SECRET_KEY_FILE": str(key_file),
    }
    seconds = float(os.environ.get("BNPL_SOAK_SECONDS", "25"))
    report = Soak(env, tmp_path).soak(seconds, workers=4)
    assert report.unexpected == []
    assert report.verify["ok"] is True, report.verify
    assert sum(report.commands.values()) > 20
    assert {"sweep", "pay", "reverse", "refund", "move", "webhook", "plan"} <= set(report.commands)
