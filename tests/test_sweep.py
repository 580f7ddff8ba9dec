"""The overdue sweep (rule 3): dates, grace, time zones, locking, crashes, the ledger."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from bnplctl.context import Context
from bnplctl.errors import Unavailable
from bnplctl.jobs import sweep_job
from bnplctl.services.sweep import SWEEP_LOCK_ID
from tests.conftest import Cli, row_counts
from tests.helpers import run_sweep
from tests.test_concurrency import Worker, _wait_until_blocked


def seed(engine: Engine, users: int, first_due: date, plans_per_user: int = 1) -> None:
    """``users`` users with 3-installment plans, the first due on ``first_due``."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (user_id, full_name, phone_e164, passport_ciphertext,"
                " passport_blind_index, passport_masked, card_brand, card_first6, card_last4,"
                " card_fingerprint, date_of_birth)"
                " SELECT 'u-' || g, 'User ' || g, '+998901234567', '\\x00', 'idx-' || g,"
                " 'AA****', 'visa', '411111', '1111', 'fp', '1990-01-01'"
                " FROM generate_series(1, :users) AS g"
            ),
            {"users": users},
        )
        connection.execute(
            text(
                "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
                " SELECT 'u-' || g, 300, 3, CAST(:first_due AS date) - 30"
                " FROM generate_series(1, :users) AS g, generate_series(1, :plans) AS p"
            ),
            {"users": users, "first_due": first_due, "plans": plans_per_user},
        )
        connection.execute(
            text(
                "INSERT INTO installments (plan_id, user_id, sequence, original_amount,"
                " amount_due, due_date)"
                " SELECT p.id, p.user_id, s, 100, 100,"
                "  CAST(:first_due AS date) + (s - 1) * 30"
                " FROM plans AS p, generate_series(1, 3) AS s"
            ),
            {"first_due": first_due},
        )


def statuses(engine: Engine) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    with engine.connect() as connection:
        installments = connection.execute(
            text("SELECT id, status FROM installments ORDER BY id")
        ).all()
        users = connection.execute(text("SELECT user_id, status FROM users ORDER BY 1")).all()
    return [(int(r[0]), str(r[1])) for r in installments], [(str(r[0]), str(r[1])) for r in users]


def _sweep(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("debt", "sweep", *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    swept: dict[str, Any] = json.loads(result.stdout)
    return swept


@freeze_time("2026-03-10 12:00:00")
def test_due_yesterday_is_overdue_due_today_is_not(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 3, 9))  # due 03-09, 04-08, 05-08
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE installments SET due_date = '2026-03-10' WHERE sequence = 2")
        )
    shown = _sweep(cli)

    assert shown["business_date"] == "2026-03-10"
    assert (shown["installments_marked_overdue"], shown["users_marked_debt"]) == (1, 1)
    assert shown["dry_run"] is False and isinstance(shown["run_id"], int)
    installments, users = statuses(engine)
    assert [status for _, status in installments] == ["OVERDUE", "UPCOMING", "UPCOMING"]
    assert users == [("u-1", "DEBT_USER")]


def test_grace_days_and_as_of(cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(engine, 1, date(2026, 3, 5))
    monkeypatch.setenv("BNPL_GRACE_DAYS", "3")
    assert _sweep(cli, "--as-of", "2026-03-08")["installments_marked_overdue"] == 0
    assert _sweep(cli, "--as-of", "2026-03-09")["installments_marked_overdue"] == 1


@freeze_time("2026-03-10 03:00:00")  # UTC; already 08:00 on the 10th in Tashkent
def test_business_date_follows_the_time_zone(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(engine, 1, date(2026, 3, 9))
    monkeypatch.setenv("BNPL_TIMEZONE", "America/Los_Angeles")  # still the 9th there
    los_angeles = _sweep(cli, "--dry-run")
    assert (los_angeles["business_date"], los_angeles["installments_marked_overdue"]) == (
        "2026-03-09",
        0,
    )
    monkeypatch.setenv("BNPL_TIMEZONE", "Asia/Tashkent")
    tashkent = _sweep(cli)
    assert (tashkent["business_date"], tashkent["installments_marked_overdue"]) == (
        "2026-03-10",
        1,
    )


def test_dry_run_reports_the_same_counts_and_writes_nothing(cli: Cli, engine: Engine) -> None:
    seed(engine, 5, date(2026, 1, 1))
    before, counts = statuses(engine), row_counts(engine)
    dry = _sweep(cli, "--as-of", "2026-02-15", "--dry-run")

    assert (dry["run_id"], dry["dry_run"]) == (None, True)
    assert statuses(engine) == before and row_counts(engine) == counts
    real = _sweep(cli, "--as-of", "2026-02-15")
    assert (
        (dry["installments_marked_overdue"], dry["users_marked_debt"])
        == (
            real["installments_marked_overdue"],
            real["users_marked_debt"],
        )
        == (10, 5)
    )


def test_rerun_for_the_same_date_changes_nothing_and_says_so(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    first = _sweep(cli, "--as-of", "2026-01-05")
    state = statuses(engine)
    again = cli("debt", "sweep", "--as-of", "2026-01-05")

    assert first["installments_marked_overdue"] == 2
    assert again.exit_code == 0
    assert "already swept for 2026-01-05: nothing changed" in again.stderr
    assert statuses(engine) == state
    with engine.connect() as connection:
        runs = connection.execute(
            text("SELECT outcome, installments_marked_overdue FROM sweep_runs ORDER BY id")
        ).all()
        audits = connection.execute(
            text("SELECT details FROM audit_events WHERE action = 'sweep.run' ORDER BY id")
        ).all()
    assert [tuple(run) for run in runs] == [("SUCCEEDED", 2), ("SUCCEEDED", 0)]
    assert audits[0][0] == {
        "business_date": "2026-01-05",
        "installments_marked_overdue": 2,
        "users_marked_debt": 2,
    }


def test_a_second_sweep_exits_75_while_one_holds_the_lock(cli: Cli, engine: Engine) -> None:
    seed(engine, 3, date(2026, 1, 1))
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        # The lock is held until after this call returns: had the sweep waited for it,
        # the call would never return.
        result = cli("debt", "sweep", "--as-of", "2026-03-01")
        holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})
    assert result.exit_code == 75
    assert result.stderr.strip() == "error: another sweep holds the lock; retry later"
    assert all(status == "UPCOMING" for _, status in statuses(engine)[0])


def _block_user_updates(connection: Connection) -> None:
    connection.execute(text("SELECT 1 FROM users WHERE user_id = 'u-1' FOR UPDATE"))


def test_two_concurrent_sweeps_do_the_work_once(cli: Cli, engine: Engine) -> None:
    seed(engine, 3, date(2026, 1, 1))
    with engine.connect() as blocker, engine.connect() as observer:
        _block_user_updates(blocker)  # the first sweep will wait inside its transaction
        first = Worker(lambda: run_sweep(as_of=date(2026, 4, 1), dry_run=False, actor="one"))
        first.start()
        _wait_until_blocked(observer)
        second = cli("debt", "sweep", "--as-of", "2026-04-01")
        blocker.rollback()
        first.join(10)
    assert second.exit_code == 75
    assert first.error is None
    assert (first.result.installments_marked_overdue, first.result.users_marked_debt) == (9, 3)
    installments, users = statuses(engine)
    assert all(status == "OVERDUE" for _, status in installments)
    assert all(status == "DEBT_USER" for _, status in users)


def test_a_killed_sweep_leaves_no_trace_and_no_lock(cli: Cli, engine: Engine) -> None:
    seed(engine, 3, date(2026, 1, 1))
    before = statuses(engine)
    with engine.connect() as blocker, engine.connect() as observer:
        _block_user_updates(blocker)
        doomed = Worker(lambda: run_sweep(as_of=date(2026, 4, 1), dry_run=False, actor="x"))
        doomed.start()
        _wait_until_blocked(observer)
        observer.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
        )
        observer.commit()
        doomed.join(10)
        blocker.rollback()
        held = observer.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
    assert isinstance(doomed.error, Unavailable)
    assert held == 0
    assert statuses(engine) == before  # the installments were marked, then rolled back

    after = _sweep(cli, "--as-of", "2026-04-01")
    assert after["installments_marked_overdue"] == 9
    with engine.connect() as connection:
        runs = connection.execute(text("SELECT outcome, error_class FROM sweep_runs ORDER BY id"))
        assert [tuple(run) for run in runs] == [("FAILED", "OperationalError"), ("SUCCEEDED", None)]


@pytest.mark.parametrize("scale", [10, 10_000])
def test_the_sweep_issues_a_fixed_number_of_statements(engine: Engine, scale: int) -> None:
    seed(engine, max(1, scale // 3), date(2026, 1, 1))
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]).split()[0])

    context = Context(actor="t")
    sweeper = context.db.engine()
    event.listen(sweeper, "before_cursor_execute", count)
    try:
        result = sweep_job(context, as_of=date(2027, 1, 1), dry_run=False)
    finally:
        event.remove(sweeper, "before_cursor_execute", count)
        context.close()
    assert result.installments_marked_overdue == max(1, scale // 3) * 3
    # lock, ledger check, close interrupted, start run, the debt lock, 2 updates, finish,
    # analyze, unlock
    assert len(statements) == 10, statements


def test_debt_report_buckets(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))  # due 01-01, 01-31, 03-02
    _sweep(cli, "--as-of", "2026-04-15")
    report = json.loads(cli("debt", "report", "--as-of", "2026-04-15", "-o", "json").stdout)

    assert report["business_date"] == "2026-04-15"
    assert report["buckets"] == [
        {"bucket": "1-30", "users": 0, "installments": 0, "amount": "0.00"},
        {"bucket": "31-60", "users": 2, "installments": 2, "amount": "200.00"},
        {"bucket": "61-90", "users": 2, "installments": 2, "amount": "200.00"},
        {"bucket": "90+", "users": 2, "installments": 2, "amount": "200.00"},
    ]
    assert (report["total_users"], report["total_installments"], report["total_amount"]) == (
        2,
        6,
        "600.00",
    )
    table = cli("debt", "report", "--as-of", "2026-04-15").stdout
    assert "61-90" in table and "200.00" in table


@freeze_time("2026-03-10 12:00:00")
def test_a_future_business_date_needs_allow_future(cli: Cli, engine: Engine) -> None:
    """A typo in --as-of must not put customers into debt."""
    seed(engine, 1, date(2026, 3, 20))  # due 03-20, 04-19, 05-19
    before = row_counts(engine)
    refused = cli("debt", "sweep", "--as-of", "2026-04-10")
    assert refused.exit_code == 2
    assert "--allow-future" in refused.stderr and "Traceback" not in refused.stderr
    assert row_counts(engine) == before

    assert _sweep(cli, "--as-of", "2026-03-10")["installments_marked_overdue"] == 0  # today
    status = json.loads(cli("status", "-o", "json").stdout)
    assert status["healthy"] is True

    allowed = _sweep(cli, "--as-of", "2026-04-10", "--allow-future")
    assert allowed["installments_marked_overdue"] == 1
    problem = (
        "a sweep ran for a business date in the future (2026-04-10):"
        " customers may be in debt too early"
    )
    status = cli("status", "-o", "json")
    assert status.exit_code == 69 and problem in json.loads(status.stdout)["problems"]
    _sweep(cli)  # today's sweep does not hide it
    status = cli("status", "-o", "json")
    assert status.exit_code == 69 and problem in json.loads(status.stdout)["problems"]


@freeze_time("2026-03-10 12:00:00")
def test_a_dry_run_may_look_ahead_without_allow_future(cli: Cli, engine: Engine) -> None:
    """A dry run writes nothing, so it is a forecast (rule 3 amended); a real sweep for
    the same date still needs --allow-future."""
    seed(engine, 2, date(2026, 3, 20))  # due 03-20, 04-19, 05-19
    before, counts = statuses(engine), row_counts(engine)

    forecast = _sweep(cli, "--as-of", "2026-04-25", "--dry-run")

    assert (forecast["business_date"], forecast["dry_run"], forecast["run_id"]) == (
        "2026-04-25",
        True,
        None,
    )
    assert (forecast["installments_marked_overdue"], forecast["users_marked_debt"]) == (4, 2)
    assert statuses(engine) == before and row_counts(engine) == counts
    assert cli("debt", "sweep", "--as-of", "2026-04-25").exit_code == 2
    real = _sweep(cli, "--as-of", "2026-04-25", "--allow-future")
    assert (real["installments_marked_overdue"], real["users_marked_debt"]) == (4, 2)
    assert real["run_id"] == 1  # the dry run used no run id


def test_a_dry_run_waits_for_a_payment_in_flight_and_counts_what_it_committed(
    cli: Cli, engine: Engine
) -> None:
    """A dry run is the marking transaction rolled back: it takes the exclusive debt lock
    as the real sweep does, so its counts are those of committed data (the former preview
    counted around a payment in flight)."""
    from bnplctl.services.installments import pay
    from tests.helpers import unit

    seed(engine, 1, date(2026, 1, 1))  # due 01-01, 01-31, 03-02
    with unit() as work:
        session = work.session
        pay(session, [1], actor="a", amount=None)  # holds the shared debt lock
        forecast = Worker(lambda: run_sweep(as_of=date(2026, 2, 15), dry_run=True, actor="t"))
        forecast.start()
        with engine.connect() as watcher:
            _wait_until_blocked(watcher)
    forecast.join(timeout=30)

    assert forecast.error is None
    counts = (forecast.result.installments_marked_overdue, forecast.result.users_marked_debt)
    assert counts == (1, 1)  # installment 2; 1 was paid meanwhile
    assert [status for _, status in statuses(engine)[0]] == ["PAID", "UPCOMING", "UPCOMING"]
    verified = cli("verify", "-o", "json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"] is True


def test_a_sweep_that_committed_is_not_failed_by_its_statistics_refresh(engine: Engine) -> None:
    """The refresh of the planner's statistics after the marking is an optimisation: when
    it fails (here its connection is terminated while ANALYZE waits for a lock), the
    sweep has committed and says so, with a warning, instead of exit 75 "retry later"."""
    seed(engine, 3, date(2026, 1, 1))
    warnings: list[str] = []
    with engine.connect() as blocker, engine.connect() as observer:
        blocker.execute(text("LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE"))  # not UPDATE
        sweeping = Worker(
            lambda: run_sweep(
                as_of=date(2026, 4, 1), dry_run=False, actor="x", warn=warnings.append
            )
        )
        sweeping.start()
        _wait_until_blocked(observer)  # in ANALYZE: the marking needs no such lock
        observer.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
        )
        observer.commit()
        sweeping.join(10)
        blocker.rollback()
    assert sweeping.error is None, sweeping.error
    assert sweeping.result.installments_marked_overdue == 9
    assert len(warnings) == 1
    assert f"sweep run {sweeping.result.run_id} committed" in warnings[0]
    with engine.connect() as connection:
        runs = connection.execute(text("SELECT outcome FROM sweep_runs")).scalars().all()
    assert runs == ["SUCCEEDED"]
