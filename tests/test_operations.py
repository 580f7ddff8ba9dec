"""The scheduler, the status dashboard, and the interrupted-run ledger."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime

import pytest
from freezegun import freeze_time
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.db import SCHEMA_HEAD
from bnplctl.scheduler import (
    JsonFormatter,
    Scheduler,
    TextFormatter,
    configure_logging,
    due_business_date,
)
from tests.conftest import Cli, DatabaseUnderTest
from tests.test_sweep import seed


def _runs(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text("SELECT business_date, outcome, error_class FROM sweep_runs ORDER BY id")
            )
        ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-03-10T01:59:00+05:00", date(2026, 3, 9)),
        ("2026-03-10T02:00:00+05:00", date(2026, 3, 10)),
        ("2026-03-09T22:30:00+00:00", date(2026, 3, 10)),  # 03:30 in Tashkent
    ],
)
def test_due_business_date_uses_the_business_time_zone(now: str, expected: date) -> None:
    assert due_business_date(datetime.fromisoformat(now), "Asia/Tashkent", "02:00") == expected


@freeze_time("2026-03-10 21:30:00")  # 02:30 on the 11th in Tashkent
def test_scheduler_once_runs_the_catch_up_sweep(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_TIMEZONE", "Asia/Tashkent")
    seed(engine, 2, date(2026, 3, 9))
    first = cli("scheduler", "run", "--once")
    second = cli("scheduler", "run", "--once")

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert _runs(engine) == [(date(2026, 3, 11), "SUCCEEDED", None)]  # once, not twice
    assert "sweep finished" in first.stderr and "installments_marked_overdue=2" in first.stderr
    assert "sweep starting" not in second.stderr
    assert "idempotency keys purged deleted=0" in second.stderr


@freeze_time("2026-03-10 21:30:00")  # 02:30 on the 11th in Tashkent
def test_the_scheduler_leaves_a_reverted_business_date_to_the_operator(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator reverts tonight's sweep to put something right first (a late payments
    file): the scheduler's next check must not sweep the date again behind their back."""
    monkeypatch.setenv("BNPL_TIMEZONE", "Asia/Tashkent")
    seed(engine, 2, date(2026, 3, 9))
    assert cli("scheduler", "run", "--once").exit_code == 0
    (run_id,) = [row[0] for row in _run_ids(engine)]
    assert cli("debt", "sweep", "--revert", str(run_id)).exit_code == 0

    again = cli("scheduler", "run", "--once")

    assert again.exit_code == 0
    assert _runs(engine) == [(date(2026, 3, 11), "REVERTED", None)]
    assert "sweep skipped" in again.stderr and "reverted" in again.stderr
    assert "debt sweep --as-of 2026-03-11" in again.stderr
    # The operator sweeps it again by hand, and the scheduler then sees it swept.
    assert cli("debt", "sweep", "--as-of", "2026-03-11").exit_code == 0
    assert "sweep skipped" not in cli("scheduler", "run", "--once").stderr
    assert [row[1] for row in _runs(engine)] == ["REVERTED", "SUCCEEDED"]


def _run_ids(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT id FROM sweep_runs"))]


def test_a_failing_job_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[date] = []

    def sweep(business_date: date) -> None:
        calls.append(business_date)
        raise RuntimeError("database exploded with +998901234567")

    scheduler = Scheduler(
        timezone="UTC", sweep_at="00:00", sweep=sweep, swept=lambda d: None, purge=lambda: 3
    )
    configure_logging("text", sys.stderr)
    logger = logging.getLogger("bnplctl.scheduler")
    logger.addHandler(caplog.handler)
    try:
        codes = [scheduler.run_once(), scheduler.run_once()]
    finally:
        logger.removeHandler(caplog.handler)
    assert codes == [1, 1]  # a bug is exit 1; the purge that ran after it does not hide it
    assert len(calls) == 2  # retried at the next turn
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["sweep failed", "sweep failed"]
    assert "+998901234567" not in caplog.text  # the exception text is never logged
    assert sum("idempotency keys purged" in r.getMessage() for r in caplog.records) == 2


def test_log_formats() -> None:
    record = logging.LogRecord("bnplctl.scheduler", logging.INFO, "", 0, "sweep finished", (), None)
    record.fields = {"business_date": "2026-03-10", "users_marked_debt": 2}
    parsed = json.loads(JsonFormatter().format(record))
    assert (parsed["level"], parsed["message"], parsed["users_marked_debt"]) == (
        "info",
        "sweep finished",
        2,
    )
    assert (
        TextFormatter()
        .format(record)
        .endswith("INFO sweep finished business_date=2026-03-10 users_marked_debt=2")
    )


def test_sigterm_stops_the_scheduler_cleanly(test_database: DatabaseUnderTest) -> None:
    env = dict(os.environ, BNPL_DATABASE_URL=test_database.url, BNPL_LOG_FORMAT="json")
    process = subprocess.Popen(
        [sys.executable, "-m", "bnplctl", "scheduler", "run"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    started = ""
    while "scheduler started" not in started and time.monotonic() < deadline:
        started += process.stderr.readline()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    rest = process.stderr.read()
    process.stderr.close()
    assert code == 0
    events = [json.loads(line)["message"] for line in (started + rest).splitlines() if line]
    assert events[0] == "scheduler started"
    assert events[-1] == "scheduler stopped"
    # A job already running when the signal came (on a loaded machine, the start-up
    # catch-up) finishes first and logs after the request.
    assert "stop requested" in events[1:-1]


def test_an_interrupted_run_is_closed_by_the_next_sweep(cli: Cli, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sweep_runs (business_date, dry_run, started_at, outcome, actor)"
                " VALUES ('2026-01-01', false, now(), 'RUNNING', 'cron')"
            )
        )
    assert cli("debt", "sweep", "--as-of", "2026-01-02").exit_code == 0
    assert _runs(engine) == [
        (date(2026, 1, 1), "FAILED", "Interrupted"),
        (date(2026, 1, 2), "SUCCEEDED", None),
    ]


def test_status_is_unhealthy_until_a_sweep_runs(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    before = cli("status", "-o", "json")
    assert before.exit_code == 69
    report = json.loads(before.stdout)
    assert report["healthy"] is False
    assert report["problems"] == ["no sweep has run yet"]
    assert report["last_sweep"] is None

    cli("debt", "sweep")
    after = cli("status", "-o", "json")
    assert after.exit_code == 0
    report = json.loads(after.stdout)
    assert report["healthy"] is True
    assert report["database"]["reachable"] is True and report["database"]["version"]
    assert report["migrations"] == {"revision": SCHEMA_HEAD, "head": SCHEMA_HEAD, "at_head": True}
    assert report["users"] == {"NORMAL": 0, "DEBT_USER": 2}
    assert report["plans"] == {"ACTIVE": 2, "COMPLETED": 0}
    assert report["installments"] == {"overdue": 6, "overdue_amount": "600.00"}
    assert report["refunds"]["PENDING"] == 0
    assert report["last_sweep"]["outcome"] == "SUCCEEDED"
    table = cli("status")
    assert "healthy" in table.stdout and "600.00" in table.stdout


def _status_at(cli: Cli, moment: str) -> tuple[int, dict[str, object]]:
    with freeze_time(moment):
        result = cli("status", "-o", "json")
    report: dict[str, object] = json.loads(result.stdout)
    return result.exit_code, report


def test_status_is_unhealthy_once_the_business_dates_sweep_is_overdue(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep of 2026-03-10 is due at 02:00 in Tashkent (21:00 UTC on the 9th); a
    healthcheck gives it 30 minutes, so as not to flap while the job runs."""
    monkeypatch.setenv("BNPL_TIMEZONE", "Asia/Tashkent")
    with freeze_time("2026-03-09T00:00:00Z"):
        assert cli("debt", "sweep").exit_code == 0  # 2026-03-09
    with engine.begin() as connection:  # tonight's run, still going
        connection.execute(
            text(
                "INSERT INTO sweep_runs (business_date, dry_run, started_at, outcome, actor)"
                " VALUES ('2026-03-10', false, '2026-03-09T21:00:00Z', 'RUNNING', 'cron')"
            )
        )

    from bnplctl.services.sweep import SWEEP_LOCK_ID

    with engine.connect() as job:  # the run at work holds the one-sweep lock
        job.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        running = _status_at(cli, "2026-03-09T21:29:00Z")
        late = _status_at(cli, "2026-03-09T21:31:00Z")
        job.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})

    assert running[0] == 0, running[1]["problems"]
    assert late[0] == 69
    assert late[1]["problems"] == [
        "no successful sweep for business date 2026-03-10 (due at 02:00 Asia/Tashkent,"
        " 30 min grace): check the cron job or run `bnplctl debt sweep`"
    ]
    with freeze_time("2026-03-09T21:31:00Z"):
        assert cli("debt", "sweep").exit_code == 0  # closes the RUNNING one, sweeps 03-10
    assert _status_at(cli, "2026-03-09T21:32:00Z")[0] == 0
    # A day later with no sweep: the next date is missing (this replaces the 26 h check).
    assert _status_at(cli, "2026-03-10T21:31:00Z")[0] == 69


def test_status_is_healthy_after_a_clean_revert_and_says_how_to_sweep_again(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 2, date(2026, 3, 1))
    with freeze_time("2026-03-10T03:00:00Z"):
        swept = json.loads(cli("debt", "sweep", "-o", "json").stdout)
        assert cli("debt", "sweep", "--revert", str(swept["run_id"])).exit_code == 0
        result = cli("status", "-o", "json")
        table = cli("status")

    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["problems"] == []
    note = (
        "the sweep for 2026-03-10 was reverted (run 1); sweep it again with"
        " `bnplctl debt sweep --as-of 2026-03-10`"
    )
    assert report["notes"] == [note]
    assert table.exit_code == 0 and "bnplctl debt sweep --as-of 2026-03-10" in table.stdout
    assert json.loads(cli("verify", "-o", "json").stdout)["ok"] is True


def test_status_reports_a_failed_last_sweep(cli: Cli, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sweep_runs (business_date, dry_run, started_at, finished_at,"
                " outcome, error_class, actor)"
                " VALUES (current_date, false, now(), now(), 'FAILED', 'OperationalError', 'cron')"
            )
        )
    result = cli("status", "-o", "json")
    assert result.exit_code == 69
    assert json.loads(result.stdout)["problems"][0] == "the last sweep FAILED"


def test_scheduler_once_tells_cron_when_every_job_failed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly catch-up in crontab.example: a database that is down must not exit 0."""
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = cli("scheduler", "run", "--once")
    assert result.exit_code == 75
    assert "sweep failed: database unavailable" in result.stderr
    assert "purge failed: database unavailable" in result.stderr


def test_status_of_an_unreachable_database_exits_75(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = cli("status", "-o", "json")
    assert result.exit_code == 75
    report = json.loads(result.stdout)
    assert report["database"]["reachable"] is False
    assert report["healthy"] is False
    assert "unreachable" in cli("status").stdout


def test_status_of_a_schema_behind_is_unhealthy(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, test_database: DatabaseUnderTest
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = create_engine(test_database.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('CREATE DATABASE "bnpl_status_behind"'))
    try:
        url = make_url(test_database.url).set(database="bnpl_status_behind")
        monkeypatch.setenv("BNPL_DATABASE_URL", url.render_as_string(hide_password=False))
        result = cli("status", "-o", "json")
        assert result.exit_code == 69
        report = json.loads(result.stdout)
        assert report["migrations"]["at_head"] is False
        assert "run `bnplctl db upgrade`" in report["problems"][0]
    finally:
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE "bnpl_status_behind" WITH (FORCE)'))
        admin.dispose()


def test_the_revert_note_names_the_run_the_operator_reverted(cli: Cli, engine: Engine) -> None:
    """A no-op re-run of the day is reverted with the run that did the work; the note
    names the latter, the one `--revert` was given."""
    seed(engine, 2, date(2026, 3, 1))
    with freeze_time("2026-03-10T03:00:00Z"):
        swept = json.loads(cli("debt", "sweep", "-o", "json").stdout)
        again = json.loads(cli("debt", "sweep", "-o", "json").stdout)
        assert again["installments_marked_overdue"] == 0
        assert cli("debt", "sweep", "--revert", str(swept["run_id"])).exit_code == 0
        report = json.loads(cli("status", "-o", "json").stdout)
    assert report["notes"] == [
        f"the sweep for 2026-03-10 was reverted (run {swept['run_id']}); sweep it again with"
        " `bnplctl debt sweep --as-of 2026-03-10`"
    ]


def test_a_run_left_running_by_a_killed_sweep_is_a_problem(cli: Cli, engine: Engine) -> None:
    """RUNNING while a sweep holds the lock is the 02:00 job at work; RUNNING with nobody
    holding it is a sweep that died (kill -9), until the next one closes it."""
    from bnplctl.services.sweep import SWEEP_LOCK_ID

    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sweep_runs (business_date, dry_run, started_at, outcome, actor)"
                " VALUES (current_date, false, now(), 'RUNNING', 'cron')"
            )
        )
    report = json.loads(cli("status", "-o", "json").stdout)
    assert "sweep run 1 is RUNNING but no sweep holds the lock: it died" in " ".join(
        report["problems"]
    )
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        try:
            at_work = json.loads(cli("status", "-o", "json").stdout)
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})
    assert not any("RUNNING" in problem for problem in at_work["problems"])
