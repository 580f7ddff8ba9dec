"""Refunds through the real CLI: rule 5 (idempotent create), rule 6 (states), rule 7 (apply)."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.services.refunds import create_refund
from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, MALIKA, add_args, unit
from tests.test_concurrency import Worker, _wait_until_blocked


@pytest.fixture
def plan_id(cli: Cli, engine: Engine) -> int:
    """usr-001 with a 300.00 plan in three installments of 100.00; usr-002 onboarded too."""
    assert cli(*add_args(JOHN)).exit_code == 0
    assert cli(*add_args(MALIKA)).exit_code == 0
    created = cli("plans", "create", "--user", "usr-001", "--amount", "300",
                  "--start", "2026-01-01", "-o", "json")  # fmt: skip
    return int(json.loads(created.stdout)["id"])


def _refund(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("refunds", *args, "-o", "json")
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else {})


def _installments(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT amount_due, status FROM installments ORDER BY sequence")
        ).all()
    return [(str(amount), status) for amount, status in rows]


def _status(engine: Engine, table: str) -> str:
    with engine.connect() as connection:
        return str(connection.execute(text(f"SELECT status FROM {table}")).scalar_one())  # noqa: S608


def test_create_is_idempotent_by_transaction_id(cli: Cli, engine: Engine, plan_id: int) -> None:
    args = ("create", "--user", "usr-001", "--transaction-id", "REF-1", "--amount", "75.5",
            "--plan", str(plan_id), "--reason", "returned")  # fmt: skip
    code, first = _refund(cli, *args)
    assert code == 0
    assert {k: first[k] for k in ("transaction_id", "user_id", "plan_id", "amount", "status")} == {
        "transaction_id": "REF-1",
        "user_id": "usr-001",
        "plan_id": plan_id,
        "amount": "75.50",
        "status": "PENDING",
    }
    before = row_counts(engine)
    again = cli("refunds", *args, "-o", "json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == first
    assert "already existed" in again.stderr
    assert row_counts(engine) == before

    for changed in (
        ["--user", "usr-001", "--amount", "75.51", "--plan", str(plan_id)],
        ["--user", "usr-002", "--amount", "75.50"],
        ["--user", "usr-001", "--amount", "75.50"],
    ):
        conflict = cli("refunds", "create", "--transaction-id", "REF-1", *changed)
        assert conflict.exit_code == 3, changed
        assert "already exists with a different user, amount or plan" in conflict.stderr
    assert row_counts(engine) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--user", "usr-404"], 4, "user usr-404 not found"),
        (["--plan", "999"], 4, "plan 999 not found"),
        (["--user", "usr-002", "--plan", "PLAN"], 3, "does not belong to user usr-002"),
        (["--amount", "0"], 2, "'--amount': must be greater than 0"),
        (["--transaction-id", " "], 2, "'--transaction-id': must be 1 to 100 characters"),
        (["--transaction-id", "R" * 101], 2, "'--transaction-id': must be 1 to 100 characters"),
        (["--transaction-id", "REF\x1b[2J"], 2, "'--transaction-id': must be printable text"),
    ],
)
def test_create_refusals_change_nothing(
    cli: Cli, engine: Engine, plan_id: int, args: list[str], code: int, message: str
) -> None:
    base = {"--user": "usr-001", "--transaction-id": "REF-9", "--amount": "10"}
    extra: dict[str, str] = {}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        (base if flag in base else extra)[flag] = str(plan_id) if value == "PLAN" else value
    flat = [part for pair in (base | extra).items() for part in pair]
    before = row_counts(engine)
    result = cli("refunds", "create", *flat)
    assert result.exit_code == code
    assert message in result.stderr
    assert row_counts(engine) == before


def test_racing_creators_make_one_refund(cli: Cli, engine: Engine, plan_id: int) -> None:
    started, release = threading.Event(), threading.Event()

    def create(hold: bool) -> tuple[int | None, bool]:
        with unit() as work:
            session = work.session
            refund, existed = create_refund(
                session, user_id="usr-001", transaction_id="RACE", amount=Decimal("10.00"),
                plan_id=None, reason=None, actor="t",
            )  # fmt: skip
            if hold:
                started.set()
                release.wait(10)
            return refund.id, existed

    first = Worker(lambda: create(True))
    first.start()
    assert started.wait(10)
    second = Worker(lambda: create(False))
    second.start()
    with engine.connect() as observer:
        _wait_until_blocked(observer)
    release.set()
    first.join(10)
    second.join(10)
    assert first.error is None and second.error is None
    assert first.result[0] == second.result[0]
    assert (first.result[1], second.result[1]) == (False, True)
    assert row_counts(engine)["refunds"] == 1


def test_state_machine_moves_forward_only(cli: Cli, engine: Engine, plan_id: int) -> None:
    for ref in ("A", "B", "C"):
        assert cli("refunds", "create", "--user", "usr-002", "--transaction-id", ref,
                   "--amount", "5").exit_code == 0  # fmt: skip
    code, rejected = _refund(cli, "reject", "A", "--reason", "not returned")
    assert (code, rejected["status"]) == (0, "REJECTED")
    assert (rejected["reason"], rejected["decision_reason"]) == (None, "not returned")
    assert rejected["processed_at"]
    code, cancelled = _refund(cli, "cancel", "2")  # by numeric id
    assert (code, cancelled["transaction_id"], cancelled["status"]) == (0, "B", "CANCELLED")

    before = row_counts(engine)
    for command, ref in (("approve", "A"), ("cancel", "A"), ("reject", "B"), ("approve", "B")):
        result = cli("refunds", command, ref)
        assert result.exit_code == 3, (command, ref)
        assert "cannot" in result.stderr
    assert row_counts(engine) == before
    code, approved = _refund(cli, "approve", "C")
    assert (code, approved["status"]) == (0, "COMPLETED")  # no plan: all of it is paid out
    assert (approved["applied_amount"], approved["payout_amount"]) == ("0.00", "5.00")
    assert cli("refunds", "approve", "C").exit_code == 3
    assert cli("refunds", "approve", "NOPE").exit_code == 4


def test_partial_refund_reduces_from_the_last_installment(
    cli: Cli, engine: Engine, plan_id: int
) -> None:
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "P", "--amount", "150",
        "--plan", str(plan_id))  # fmt: skip
    code, refund = _refund(cli, "approve", "P")

    assert code == 0
    assert (refund["status"], refund["applied_amount"], refund["payout_amount"]) == (
        "COMPLETED",
        "150.00",
        "0.00",
    )
    assert _installments(engine) == [
        ("100.00", "UPCOMING"),
        ("50.00", "UPCOMING"),
        ("0.00", "PAID"),
    ]
    assert _status(engine, "plans") == "ACTIVE"
    with engine.connect() as connection:
        events = connection.execute(
            text("SELECT action, details FROM audit_events WHERE entity = 'refund' ORDER BY id")
        ).all()
    assert [action for action, _ in events] == ["refund.created", "refund.status_changed"]
    assert events[1][1] == {  # one event for the approval, money as strings
        "from": "PENDING",
        "to": "COMPLETED",
        "source": "command",
        "plan_id": plan_id,
        "applied_amount": "150.00",
        "payout_amount": "0.00",
    }


def test_refund_that_clears_the_plan_restores_the_user(
    cli: Cli, engine: Engine, plan_id: int
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE installments SET status = 'OVERDUE', overdue_since = due_date + 1"
                " WHERE sequence = 1"
            )
        )
        connection.execute(text("UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'usr-001'"))
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "X", "--amount", "300",
        "--plan", str(plan_id))  # fmt: skip
    code, refund = _refund(cli, "approve", "X")

    assert (code, refund["applied_amount"], refund["payout_amount"]) == (0, "300.00", "0.00")
    assert _installments(engine) == [("0.00", "PAID")] * 3
    assert _status(engine, "plans") == "COMPLETED"
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM users WHERE user_id = 'usr-001'")
        ).scalar_one()
    assert status == "NORMAL"


def test_refund_beyond_the_balance_is_paid_out(cli: Cli, engine: Engine, plan_id: int) -> None:
    assert cli("installments", "pay", "1").exit_code == 0  # 200.00 left unpaid
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "BIG", "--amount",
        "250.25", "--plan", str(plan_id))  # fmt: skip
    code, refund = _refund(cli, "approve", "BIG")

    assert (code, refund["applied_amount"], refund["payout_amount"]) == (0, "200.00", "50.25")
    assert _installments(engine) == [("0.00", "PAID"), ("0.00", "PAID"), ("0.00", "PAID")]
    assert _status(engine, "plans") == "COMPLETED"


def test_list_and_show(cli: Cli, engine: Engine, plan_id: int) -> None:
    for ref, user in (("R1", "usr-001"), ("R2", "usr-002")):
        cli("refunds", "create", "--user", user, "--transaction-id", ref, "--amount", "1")
    cli("refunds", "reject", "R2")
    mine = json.loads(cli("refunds", "list", "--user", "usr-001", "-o", "json").stdout)
    assert [r["transaction_id"] for r in mine] == ["R1"]
    assert "applied_amount" not in mine[0]
    rejected = cli("refunds", "list", "--status", "REJECTED", "-o", "csv").stdout
    assert rejected.splitlines()[1].startswith("2,R2,usr-002")
    shown = json.loads(cli("refunds", "show", "R1", "-o", "json").stdout)
    assert shown == mine[0]
    assert "R2" in cli("refunds", "show", "2").stdout


def test_idempotency_key_on_refund_create(cli: Cli, engine: Engine, plan_id: int) -> None:
    args = ("refunds", "create", "--user", "usr-001", "--transaction-id", "K", "--amount", "3",
            "--idempotency-key", "refund-key")  # fmt: skip
    first = cli(*args, "-o", "json")
    again = cli(*args, "-o", "json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert "returning the refund created earlier" in again.stderr


def test_a_refund_created_beside_a_batch_chunk_waits_for_it(
    cli: Cli, engine: Engine, plan_id: int
) -> None:
    """A batch chunk locks ``users`` then ``refunds``; ``refunds create`` must take the
    user first too, or the two wait on each other (the server ends one: exit 75)."""
    from bnplctl.services.refunds import create_refund
    from tests.helpers import unit
    from tests.test_concurrency import Worker, _wait_until_blocked

    def create() -> int:
        with unit() as work:
            session = work.session
            refund, _ = create_refund(
                session, user_id="usr-001", transaction_id="BESIDE-1",
                amount=Decimal("10.00"), plan_id=plan_id, reason=None, actor="t",
            )  # fmt: skip
            return int(refund.id or 0)

    with engine.connect() as chunk, engine.connect() as watcher:
        chunk.execute(text("LOCK TABLE users IN EXCLUSIVE MODE"))  # as a chunk starts
        worker = Worker(create)
        worker.start()
        _wait_until_blocked(watcher)
        chunk.execute(text("LOCK TABLE refunds, installments IN EXCLUSIVE MODE"))
        chunk.commit()
        worker.join(timeout=30)
    assert worker.error is None, worker.error
    assert worker.result > 0
    assert cli("verify").exit_code == 0


def test_a_decision_keeps_the_reason_given_at_creation(
    cli: Cli, engine: Engine, plan_id: int, tmp_path: Path
) -> None:
    for ref in ("A", "B", "C"):
        assert cli("refunds", "create", "--user", "usr-001", "--transaction-id", ref,
                   "--amount", "5", "--plan", str(plan_id), "--reason", f"damaged {ref}",
                   ).exit_code == 0  # fmt: skip
    decided = {
        "A": _refund(cli, "reject", "A", "--reason", "goods not returned")[1],
        "B": _refund(cli, "cancel", "B", "--reason", "customer withdrew")[1],
        "C": _refund(cli, "approve", "C", "--reason", "checked by ops")[1],
    }

    assert {ref: (r["reason"], r["decision_reason"]) for ref, r in decided.items()} == {
        "A": ("damaged A", "goods not returned"),
        "B": ("damaged B", "customer withdrew"),
        "C": ("damaged C", "checked by ops"),
    }
    shown = json.loads(cli("refunds", "show", "A", "-o", "json").stdout)
    assert (shown["reason"], shown["decision_reason"]) == ("damaged A", "goods not returned")
    line = json.loads(cli("refunds", "show", "A", "-o", "jsonl").stdout)
    assert line["decision_reason"] == "goods not returned"
    header, row = cli("refunds", "show", "A", "-o", "csv").stdout.splitlines()
    assert "decision_reason" in header.split(",") and "goods not returned" in row
    assert "goods not returned" in cli("refunds", "show", "A").stdout
    listed = json.loads(cli("refunds", "list", "-o", "json").stdout)
    assert [r["decision_reason"] for r in listed] == [
        "goods not returned", "customer withdrew", "checked by ops",
    ]  # fmt: skip
    with engine.connect() as connection:
        audited: dict[str, str] = dict(
            connection.execute(
                text(
                    "SELECT r.transaction_id, e.details ->> 'decision_reason' FROM audit_events e"
                    " JOIN refunds r ON e.entity_id = r.id::text"
                    " WHERE e.action = 'refund.status_changed'"
                )
            ).all()
        )
    assert audited == {
        "A": "goods not returned",
        "B": "customer withdrew",
        "C": "checked by ops",
    }
    no_reason = cli("refunds", "create", "--user", "usr-002", "--transaction-id", "D",
                    "--amount", "5", "--reason", "late")  # fmt: skip
    assert no_reason.exit_code == 0
    _, plain = _refund(cli, "reject", "D")
    assert (plain["reason"], plain["decision_reason"]) == ("late", None)
    # A merchant's webhook decides without a reason of ours: it stays null.
    assert cli("refunds", "create", "--user", "usr-002", "--transaction-id", "E",
               "--amount", "5", "--reason", "wrong size").exit_code == 0  # fmt: skip
    updates = tmp_path / "updates.csv"
    updates.write_text(
        "refund_id,status,merchant_reference,event_id,occurred_at\n"
        "E,rejected,M-E,evt-e,2026-01-05T10:00:00Z\n"
    )
    assert cli("webhooks", "ingest", str(updates)).exit_code == 0
    _, hooked = _refund(cli, "show", "E")
    assert (hooked["status"], hooked["reason"], hooked["decision_reason"]) == (
        "REJECTED", "wrong size", None,
    )  # fmt: skip


@pytest.mark.parametrize(
    "reason",
    [
        "card 4111111111111111",  # a card, passport or phone number in free text
        "passport AA1234567",
        "phone +998901234567",
        "red \x1b[31mtext\x07",  # would drive the terminal of whoever cats the CSV
        "\u202etxet desrever",  # bidi override
        "x" * 501,
    ],
)
def test_a_reason_is_free_text_with_the_guard_names_have(
    cli: Cli, engine: Engine, plan_id: int, reason: str
) -> None:
    """Creation's and the decision's --reason: refused before anything is written, exit
    2 naming the option, the value never echoed."""
    assert cli("refunds", "create", "--user", "usr-001", "--transaction-id", "R-1",
               "--amount", "5", "--plan", str(plan_id)).exit_code == 0  # fmt: skip
    before = row_counts(engine)
    for argv in (
        ("refunds", "create", "--user", "usr-001", "--transaction-id", "R-2", "--amount", "5",
         "--reason", reason),
        ("refunds", "reject", "R-1", "--reason", reason),
    ):  # fmt: skip
        result = cli(*argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "'--reason'" in result.stderr
        assert reason not in result.output
    assert row_counts(engine) == before
    assert _status(engine, "refunds") == "PENDING"


def test_an_empty_decision_reason_is_no_reason(cli: Cli, engine: Engine, plan_id: int) -> None:
    assert cli("refunds", "create", "--user", "usr-001", "--transaction-id", "R-1",
               "--amount", "5", "--plan", str(plan_id)).exit_code == 0  # fmt: skip
    rejected = _refund(cli, "reject", "R-1", "--reason", "  ")[1]
    assert rejected["decision_reason"] is None
