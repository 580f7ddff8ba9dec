"""Plans, installments, payments and the debt view through the real CLI (rules 1, 2, 4, 8)."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, MALIKA, add_args


@pytest.fixture
def john(cli: Cli) -> str:
    assert cli(*add_args(JOHN)).exit_code == 0
    return JOHN["user_id"]


def _create(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("plans", "create", *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def _set(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def test_preview_prints_rule_1_and_writes_nothing(cli: Cli, engine: Engine) -> None:
    result = cli("plans", "preview", "--amount", "500", "--start", "2025-01-31", "-o", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout)["installments"] == [
        {"sequence": 1, "amount_due": "166.67", "due_date": "2025-02-28"},
        {"sequence": 2, "amount_due": "166.67", "due_date": "2025-03-31"},
        {"sequence": 3, "amount_due": "166.66", "due_date": "2025-04-30"},
    ]
    assert "nothing was written" in result.stderr
    assert sum(row_counts(engine).values()) == 0


def test_create_writes_the_plan_and_its_installments(cli: Cli, engine: Engine, john: str) -> None:
    plan = _create(
        cli, "--user", john, "--amount", "500.00", "--start", "2024-01-31",
        "--installments", "4", "--merchant-reference", "ORDER-1",
    )  # fmt: skip

    assert plan["user"] == {
        "user_id": "usr-001",
        "full_name": "John Doe",
        "phone_number": "+998****4567",
    }
    assert (plan["total_amount"], plan["status"], plan["merchant_reference"]) == (
        "500.00",
        "ACTIVE",
        "ORDER-1",
    )
    assert [(i["amount_due"], i["due_date"], i["status"]) for i in plan["installments"]] == [
        ("125.00", "2024-02-29", "UPCOMING"),
        ("125.00", "2024-03-31", "UPCOMING"),
        ("125.00", "2024-04-30", "UPCOMING"),
        ("125.00", "2024-05-31", "UPCOMING"),
    ]
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT sum(amount_due), count(*), min(user_id) FROM installments")
        ).one()
        action = connection.execute(text("SELECT action FROM audit_events ORDER BY id")).all()
    assert (stored[0], stored[1], stored[2]) == (Decimal("500.00"), 4, "usr-001")
    assert [a[0] for a in action] == ["user.created", "plan.created"]


@freeze_time("2026-03-01 02:00:00")  # UTC: still 28 February in New York
def test_default_start_is_today_in_the_business_time_zone(
    cli: Cli, john: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_TIMEZONE", "America/New_York")
    plan = _create(cli, "--user", john, "--amount", "90")
    assert plan["start_date"] == "2026-02-28"
    assert [i["due_date"] for i in plan["installments"]] == [
        "2026-03-28",
        "2026-04-28",
        "2026-05-28",
    ]


@freeze_time("2025-12-31 12:00:00")
def test_december_start_rolls_into_the_next_year(cli: Cli, john: str) -> None:
    plan = _create(cli, "--user", john, "--amount", "100", "--installments", "2")
    assert [i["due_date"] for i in plan["installments"]] == ["2026-01-31", "2026-02-28"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "0"], "amount: must be greater than 0"),
        (["--amount", "-3"], "amount: must be a number written with digits"),
        (["--amount", "10.001"], "amount: at most 2 decimal places"),
        (["--amount", "ten"], "amount: must be a number written with digits"),
        (["--amount", "1e3"], "amount: must be a number written with digits"),
        (["--amount", "1_000"], "amount: must be a number written with digits"),
        (["--amount", "\u0661\u0660\u0660"], "amount: must be a number written with digits"),
        (["--amount", "100", "--installments", "0"], "installments: must be between 1 and 24"),
        (["--amount", "100", "--installments", "25"], "installments: must be between 1 and 24"),
        (["--amount", "100", "--start", "2025-02-30"], "start: 2025-02-30 is not a calendar date"),
        (["--amount", "100", "--start", "20250201"], "start: must be a date written YYYY-MM-DD"),
        (["--amount", "100", "--start", "2025-W05-1"], "start: must be a date written YYYY-MM-DD"),
        (
            ["--amount", "100", "--start", "0001-01-01"],
            "start: must be from 2000-01-01 to 2100-12-31",
        ),
    ],
)
def test_bad_plan_options_are_usage_errors_and_change_nothing(
    cli: Cli, engine: Engine, john: str, args: list[str], message: str
) -> None:
    before = row_counts(engine)
    result = cli("plans", "create", "--user", john, *args)

    option, _, reason = message.partition(": ")
    assert result.exit_code == 2
    assert f"Invalid value for '--{option}': {reason}" in result.stderr
    assert row_counts(engine) == before


def test_debt_user_is_refused_with_the_exact_message(cli: Cli, engine: Engine, john: str) -> None:
    _set(engine, "UPDATE users SET status = 'DEBT_USER'")
    before = row_counts(engine)
    result = cli("plans", "create", "--user", john, "--amount", "100")

    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "error: Users with DEBT_USER status cannot create new BNPL plans"
    )
    assert row_counts(engine) == before


def test_unknown_user_exits_4(cli: Cli, engine: Engine) -> None:
    result = cli("plans", "create", "--user", "usr-404", "--amount", "100")
    assert result.exit_code == 4
    assert "user usr-404 not found" in result.stderr
    assert sum(row_counts(engine).values()) == 0


def test_list_and_show(cli: Cli, engine: Engine, john: str) -> None:
    assert cli(*add_args(MALIKA)).exit_code == 0
    first = _create(cli, "--user", john, "--amount", "300", "--start", "2026-01-01")
    _create(cli, "--user", "usr-002", "--amount", "200", "--start", "2026-01-01")
    _set(engine, "UPDATE plans SET status = 'COMPLETED' WHERE user_id = 'usr-002'")

    mine = json.loads(cli("plans", "list", "--user", john, "-o", "json").stdout)
    assert [plan["id"] for plan in mine] == [first["id"]]
    completed = cli("plans", "list", "--status", "COMPLETED", "-o", "csv").stdout
    assert [row["user_id"] for row in csv.DictReader(completed.splitlines())] == ["usr-002"]
    assert len(cli("plans", "list", "-o", "jsonl").stdout.splitlines()) == 2

    shown = cli("plans", "show", str(first["id"]), "-o", "json")
    assert json.loads(shown.stdout) == first
    rows = list(
        csv.DictReader(cli("plans", "show", str(first["id"]), "-o", "csv").stdout.splitlines())
    )
    assert [(row["plan_id"], row["sequence"]) for row in rows] == [
        ("1", "1"),
        ("1", "2"),
        ("1", "3"),
    ]
    table = cli("plans", "show", str(first["id"])).stdout
    assert "+998****4567" in table and "100.00" in table
    missing = cli("plans", "show", "999")
    assert missing.exit_code == 4 and "plan 999 not found" in missing.stderr


def test_paying_clears_debt_and_completes_the_plan(cli: Cli, engine: Engine, john: str) -> None:
    plan = _create(cli, "--user", john, "--amount", "300", "--start", "2026-01-10")
    ids = [str(i["id"]) for i in plan["installments"]]
    _set(
        engine,
        "UPDATE installments SET status = 'OVERDUE', overdue_since = due_date + 1"
        " WHERE sequence <= 2",
    )
    _set(engine, "UPDATE users SET status = 'DEBT_USER'")

    first = cli("installments", "pay", ids[0], "-o", "json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["users_restored"] == []  # installment 2 is still OVERDUE

    second = json.loads(cli("installments", "pay", ids[1], ids[2], "-o", "json").stdout)
    assert [i["status"] for i in second["installments"]] == ["PAID", "PAID"]
    assert all(i["paid_at"] for i in second["installments"])
    assert (second["plans_completed"], second["users_restored"]) == ([plan["id"]], ["usr-001"])

    with engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM users")).scalar_one() == "NORMAL"
        assert connection.execute(text("SELECT status FROM plans")).scalar_one() == "COMPLETED"
        actions = [row[0] for row in connection.execute(text("SELECT action FROM audit_events"))]
    assert actions.count("installment.paid") == 3
    assert actions.count("plan.completed") == 1
    assert actions.count("user.status_changed") == 1


def test_paying_is_all_or_nothing(cli: Cli, engine: Engine, john: str) -> None:
    plan = _create(cli, "--user", john, "--amount", "300")
    ids = [str(i["id"]) for i in plan["installments"]]
    assert cli("installments", "pay", ids[0]).exit_code == 0
    before = row_counts(engine)

    paid_again = cli("installments", "pay", ids[1], ids[0])
    assert paid_again.exit_code == 3
    assert f"installment {ids[0]} is already PAID" in paid_again.stderr
    unknown = cli("installments", "pay", ids[1], "999")
    assert unknown.exit_code == 4
    assert "installment 999 not found" in unknown.stderr
    assert row_counts(engine) == before
    with engine.connect() as connection:
        statuses = connection.execute(text("SELECT status FROM installments ORDER BY id")).all()
    assert [s[0] for s in statuses] == ["PAID", "UPCOMING", "UPCOMING"]


@freeze_time("2026-05-20 12:00:00")
def test_debt_show_lists_overdue_installments(cli: Cli, engine: Engine, john: str) -> None:
    _create(cli, "--user", john, "--amount", "500", "--start", "2026-01-31")
    _set(
        engine,
        "UPDATE installments SET status = 'OVERDUE', overdue_since = due_date + 1"
        " WHERE sequence <= 2",
    )
    _set(engine, "UPDATE users SET status = 'DEBT_USER'")
    shown = json.loads(cli("debt", "show", john, "-o", "json").stdout)

    assert shown == {
        "user_id": "usr-001",
        "has_overdue": True,
        "total_debt": "333.34",
        "overdue_installments": [
            {"id": 1, "plan_id": 1, "amount_due": "166.67", "due_date": "2026-02-28",
             "days_overdue": (date(2026, 5, 20) - date(2026, 2, 28)).days},
            {"id": 2, "plan_id": 1, "amount_due": "166.67", "due_date": "2026-03-31",
             "days_overdue": 50},
        ],
        "total_overdue_count": 2,
        "user_status": "DEBT_USER",
    }  # fmt: skip
    table = cli("debt", "show", john)
    assert "333.34" in table.stdout and "DEBT_USER" in table.stdout


def test_debt_show_without_debt_and_unknown_user(cli: Cli, john: str) -> None:
    clean = json.loads(cli("debt", "show", john, "-o", "json").stdout)
    assert (clean["has_overdue"], clean["total_debt"], clean["overdue_installments"]) == (
        False,
        "0.00",
        [],
    )
    assert clean["user_status"] == "NORMAL"
    assert cli("debt", "show", "usr-404").exit_code == 4


def test_idempotent_create_returns_the_first_plan(cli: Cli, engine: Engine, john: str) -> None:
    args = ("--user", john, "--amount", "300", "--idempotency-key", "order-42")
    first = _create(cli, *args)
    before = row_counts(engine)
    again = cli("plans", "create", *args, "-o", "json")

    assert again.exit_code == 0
    assert json.loads(again.stdout) == first
    assert "returning the plan created earlier" in again.stderr
    assert row_counts(engine) == before

    different = cli("plans", "create", "--user", john, "--amount", "301",
                    "--idempotency-key", "order-42")  # fmt: skip
    assert different.exit_code == 3
    assert "idempotency key order-42 was already used for a different request" in different.stderr
    assert row_counts(engine) == before


def test_refused_request_does_not_burn_its_key(cli: Cli, engine: Engine, john: str) -> None:
    _set(engine, "UPDATE users SET status = 'DEBT_USER'")
    args = ("--user", john, "--amount", "300", "--idempotency-key", "k-1")
    assert cli("plans", "create", *args).exit_code == 3
    _set(engine, "UPDATE users SET status = 'NORMAL'")
    assert cli("plans", "create", *args).exit_code == 0
    assert row_counts(engine)["plans"] == 1


def test_idempotent_pay_repeat_is_not_a_double_payment(cli: Cli, engine: Engine, john: str) -> None:
    plan = _create(cli, "--user", john, "--amount", "300")
    first_id = str(plan["installments"][0]["id"])
    first = cli("installments", "pay", first_id, "--idempotency-key", "pay-1", "-o", "json")
    repeat = cli("installments", "pay", first_id, "--idempotency-key", "pay-1", "-o", "json")

    assert repeat.exit_code == 0
    assert json.loads(repeat.stdout) == json.loads(first.stdout)
    with engine.connect() as connection:
        paid_events = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'installment.paid'")
        ).scalar_one()
    assert paid_events == 1
    assert cli("installments", "pay", first_id).exit_code == 3


def test_expired_keys_are_purged_and_can_be_reused(cli: Cli, engine: Engine, john: str) -> None:
    from bnplctl.services.idempotency import purge_expired
    from tests.helpers import unit

    _create(cli, "--user", john, "--amount", "300", "--idempotency-key", "old")
    _create(cli, "--user", john, "--amount", "300", "--idempotency-key", "fresh")
    _set(engine, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
                 " WHERE key = 'old'")  # fmt: skip
    reused = _create(cli, "--user", john, "--amount", "999", "--idempotency-key", "old")
    assert reused["total_amount"] == "999.00"

    _set(engine, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    with unit() as work:
        session = work.session
        assert purge_expired(session) == 2
    assert row_counts(engine)["idempotency_keys"] == 0


def test_a_start_after_2100_is_a_usage_error(cli: Cli) -> None:
    # Plan starts lie from 2000-01-01 to 2100-12-31 (PRODUCT.md, strict input); the last
    # one still gives a schedule.
    result = cli("plans", "preview", "--amount", "100.00", "--start", "9999-11-30")
    assert result.exit_code == 2
    assert "Invalid value for '--start': must be from 2000-01-01 to 2100-12-31" in result.stderr
    last = cli("plans", "preview", "--amount", "100.00", "--start", "2100-12-31",
               "--installments", "2", "-o", "json")  # fmt: skip
    assert last.exit_code == 0
    assert [row["due_date"] for row in json.loads(last.stdout)["installments"]] == [
        "2101-01-31",
        "2101-02-28",
    ]


def test_a_merchant_reference_over_100_characters_is_a_usage_error(
    cli: Cli, engine: Engine
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    result = cli("plans", "create", "--user", "usr-001", "--amount", "100.00",
                 "--merchant-reference", "M" * 101)  # fmt: skip
    assert result.exit_code == 2
    assert "Invalid value for '--merchant-reference': must be 1 to 100 characters" in result.stderr
    assert row_counts(engine)["plans"] == 0


def test_an_idempotency_key_with_control_characters_is_a_usage_error(
    cli: Cli, engine: Engine
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    result = cli("plans", "create", "--user", "usr-001", "--amount", "100.00",
                 "--idempotency-key", "order\x0742")  # fmt: skip
    assert result.exit_code == 2
    assert "'--idempotency-key': must not contain control characters" in result.stderr
    assert row_counts(engine)["plans"] == 0


def test_audit_list_user_shows_one_customers_history_newest_first(cli: Cli, john: str) -> None:
    assert cli(*add_args(MALIKA)).exit_code == 0
    plan = _create(cli, "--user", john, "--amount", "300")
    _create(cli, "--user", MALIKA["user_id"], "--amount", "90")
    first = plan["installments"][0]["id"]
    paid = cli("installments", "pay", str(first), "-o", "json")
    assert paid.exit_code == 0, paid.stderr
    payment = json.loads(paid.stdout)["payments"][0]["id"]

    result = cli("audit", "list", "--user", john, "-o", "json")

    assert result.exit_code == 0, result.stderr
    events = json.loads(result.stdout)
    assert [(e["action"], e["entity_id"]) for e in events] == [
        ("installment.paid", str(first)),
        ("payment.recorded", str(payment)),
        ("plan.created", str(plan["id"])),
        ("user.created", john),
    ]
    assert {e["user_id"] for e in events} == {john}
    assert json.loads(cli("audit", "list", "--user", "usr-nobody", "-o", "json").stdout) == []


def test_audit_list_since_keeps_events_from_that_instant_in_any_offset(cli: Cli, john: str) -> None:
    from datetime import datetime, timedelta, timezone

    plan = _create(cli, "--user", john, "--amount", "300")
    everything = json.loads(cli("audit", "list", "-o", "json").stdout)
    created_at = datetime.fromisoformat(
        next(e["occurred_at"] for e in everything if e["action"] == "plan.created")
    )
    in_tashkent = created_at.astimezone(timezone(timedelta(hours=5))).isoformat()

    for since in (created_at.isoformat(), in_tashkent):
        later = json.loads(cli("audit", "list", "--since", since, "-o", "json").stdout)
        assert [(e["action"], e["entity_id"]) for e in later] == [("plan.created", str(plan["id"]))]
    after = (created_at + timedelta(microseconds=1)).isoformat()
    assert json.loads(cli("audit", "list", "--since", after, "-o", "json").stdout) == []
    assert len(json.loads(cli("audit", "list", "--since", "2000-01-01", "-o", "json").stdout)) == 2
    only_users = cli("audit", "list", "--user", john, "--entity", "user", "-o", "json").stdout
    assert [e["action"] for e in json.loads(only_users)] == ["user.created"]


def test_lists_longer_than_a_fetch_batch_come_whole_and_in_order(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    # List commands stream rows from a server-side cursor, LIST_BATCH at a time, and plans
    # get their users and installments a batch at a time: nothing lost or repeated at the
    # seams, and the JSON array is the same document json.dumps would write.
    from bench.run import write_users
    from bnplctl.db import LIST_BATCH

    source = tmp_path / "users.csv"
    write_users(source, 2 * LIST_BATCH + 500)
    assert cli("users", "import", str(source)).exit_code == 0
    _set(
        engine,
        "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
        " SELECT user_id, 300, 3, '2026-01-01' FROM users ORDER BY user_id",
    )
    _set(
        engine,
        "INSERT INTO installments (plan_id, user_id, sequence, original_amount, amount_due,"
        " due_date) SELECT p.id, p.user_id, s, 100, 100, '2026-02-01'::date + 30 * s"
        " FROM plans p, generate_series(1, 3) AS s",
    )
    limit = 2 * LIST_BATCH + 300

    listed = cli("users", "list", "--limit", str(limit), "-o", "json").stdout
    users = json.loads(listed)
    assert listed == json.dumps(users, indent=2, ensure_ascii=False) + "\n"
    assert [u["user_id"] for u in users] == [f"u{n:07d}" for n in range(limit)]

    plans = json.loads(cli("plans", "list", "--limit", str(limit), "-o", "json").stdout)
    assert [p["id"] for p in plans] == list(range(1, limit + 1))
    assert {len(p["installments"]) for p in plans} == {3}
    assert all(p["user"]["phone_number"].startswith("+998****") for p in plans)
    assert [p["user"]["user_id"] for p in plans] == [u["user_id"] for u in users]

    rows = cli("plans", "list", "--limit", str(limit), "-o", "csv").stdout.splitlines()
    assert len(rows) == 1 + limit


def test_audit_list_refuses_an_entity_it_never_records(cli: Cli, john: str) -> None:
    """A typo (``users`` for ``user``) is a usage error, not an empty list."""
    typo = cli("audit", "list", "--entity", "users")
    assert typo.exit_code == 2
    assert "'users' is not one of 'user', 'plan'" in typo.stderr
    (created,) = json.loads(cli("audit", "list", "--entity", "user", "-o", "json").stdout)
    assert (created["action"], created["entity_id"]) == ("user.created", john)
