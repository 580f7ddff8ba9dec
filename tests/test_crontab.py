"""crontab.example, run as cron runs it: each job line through /bin/sh with the file's own
environment, its logs moved into a temporary directory. Each log file holds one shape of
line (``*.jsonl``: JSON objects; ``*.log``: text), whatever the database's state."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.services.locks import DEBT_LOCK_ID
from bnplctl.services.sweep import SWEEP_LOCK_ID
from tests.conftest import DatabaseUnderTest
from tests.test_sweep import seed

CRONTAB = Path(__file__).resolve().parents[1] / "crontab.example"
LOG_DIR = "/var/log/bnplctl/"
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"
SEEDED_PHONE = "+998901234567"  # tests.test_sweep.seed's: no log may show it
JSON_KEYS = {
    "sweep.jsonl": {"run_id", "business_date", "installments_marked_overdue", "users_marked_debt"},
    "verify.jsonl": {"ok", "checks"},
    "scheduler.jsonl": {"ts", "level", "logger", "message"},
}
ASSIGNMENT = re.compile(r"([A-Za-z_]\w*)\s*=\s*(.*)")


@dataclass(frozen=True)
class Crontab:
    environment: dict[str, str]
    commands: tuple[str, ...]


def parse_crontab(source: str) -> Crontab:
    """The ``NAME=value`` lines and the job lines' commands (after five schedule fields)."""
    environment: dict[str, str] = {}
    commands: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assignment = ASSIGNMENT.fullmatch(stripped)
        if assignment:
            environment[assignment.group(1)] = assignment.group(2)
            continue
        fields = stripped.split(None, 5)
        assert len(fields) == 6, f"not a job line of five schedule fields: {stripped}"
        commands.append(fields[5])
    return Crontab(environment, tuple(commands))


@dataclass
class CronHost:
    """The crontab's job lines, run as cron would, with their logs under ``logs``."""

    crontab: Crontab
    logs: Path
    home: Path
    overrides: dict[str, str] = field(default_factory=dict)

    def line_running(self, words: str) -> str:
        [command] = [command for command in self.crontab.commands if words in command]
        return command

    def environment(self, **changes: str) -> dict[str, str]:
        """Cron's own few variables, then the file's, then the test's (database, key, the
        venv's bnplctl first on PATH); nothing inherited from the test process."""
        cron_defaults = {"HOME": str(self.home), "LOGNAME": "bnpl", "SHELL": "/bin/sh"}
        path = f"{os.path.dirname(sys.executable)}:{self.crontab.environment['PATH']}"
        return cron_defaults | self.crontab.environment | {"PATH": path} | self.overrides | changes

    def shell_command(self, command: str) -> list[str]:
        """``command`` with its logs moved here: it may log under LOG_DIR only, or the test
        would write outside its own directory."""
        assert LOG_DIR in command
        moved = command.replace(LOG_DIR, f"{self.logs}/")
        assert "/var/log" not in moved
        assert "%" not in moved  # cron turns % into a newline
        return ["/bin/sh", "-c", moved]

    def run(self, command: str, **changes: str) -> int:
        """The line's exit status; nothing may reach stdout or stderr (cron would mail it)."""
        done = subprocess.run(
            self.shell_command(command),
            env=self.environment(**changes),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.stdout, done.stderr) == ("", "")
        return done.returncode

    def run_all(self, **changes: str) -> list[int]:
        return [self.run(command, **changes) for command in self.crontab.commands]

    def start(self, command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.shell_command(command), env=self.environment(), cwd=self.home, text=True
        )


@pytest.fixture
def cron(tmp_path: Path, test_database: DatabaseUnderTest, key_file: Path) -> CronHost:
    logs = tmp_path / "log"
    logs.mkdir()
    return CronHost(
        crontab=parse_crontab(CRONTAB.read_text(encoding="utf-8")),
        logs=logs,
        home=tmp_path,
        overrides={"BNPL_DATABASE_URL": test_database.url, "BNPL_SECRET_KEY_FILE": str(key_file)},
    )


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict | list)
    except ValueError:
        return False


def log_shapes(logs: Path) -> dict[str, list[Any]]:
    """Each log file's lines, after checking its shape: a ``.jsonl`` line is an object with
    the keys its file promises, a ``.log`` line is text, no line shows personal data."""
    found: dict[str, list[Any]] = {}
    for path in sorted(logs.iterdir()):
        content = path.read_text(encoding="utf-8")
        assert SEEDED_PHONE not in content, path.name
        assert content == "" or content.endswith("\n"), path.name
        lines = content.splitlines()
        if path.suffix == ".jsonl":
            events = [json.loads(line) for line in lines]
            assert all(isinstance(event, dict) for event in events), path.name
            assert all(JSON_KEYS[path.name] <= event.keys() for event in events), path.name
            found[path.name] = events
        else:
            assert path.suffix == ".log", path.name
            assert not any(_is_json(line) for line in lines), path.name
            found[path.name] = lines
    return found


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_crontab_has_the_nightly_and_the_hourly_line() -> None:
    crontab = parse_crontab(CRONTAB.read_text(encoding="utf-8"))
    assert len(crontab.commands) == 2
    assert "debt sweep -o jsonl" in crontab.commands[0]
    assert "verify -o jsonl" in crontab.commands[0]
    assert "BNPL_LOG_FORMAT=json" in crontab.commands[1]
    assert "scheduler run --once" in crontab.commands[1]
    needed = {"PATH", "BNPL_DATABASE_URL", "BNPL_SECRET_KEY_FILE", "BNPL_TIMEZONE"}
    assert needed <= crontab.environment.keys()  # cron's own environment is nearly empty


def test_each_line_exits_0_on_a_healthy_database_and_appends_one_shape(
    cron: CronHost, engine: Engine
) -> None:
    seed(engine, 2, date(2024, 1, 1))
    assert cron.run_all() == [0, 0]
    assert cron.run_all() == [0, 0]
    logs = log_shapes(cron.logs)
    assert sorted(logs) == [
        "scheduler.jsonl",
        "sweep.jsonl",
        "sweep.log",
        "verify.jsonl",
        "verify.log",
    ]
    first, second = logs["sweep.jsonl"]
    assert (first["installments_marked_overdue"], first["users_marked_debt"]) == (6, 2)
    assert (second["installments_marked_overdue"], second["users_marked_debt"]) == (0, 0)
    assert [report["ok"] for report in logs["verify.jsonl"]] == [True, True]
    assert len(logs["sweep.log"]) == 1 and "nothing" in logs["sweep.log"][0]
    assert logs["verify.log"] == []
    messages = [event["message"] for event in logs["scheduler.jsonl"]]
    assert messages.count("idempotency keys purged") == 2
    assert all(event["level"] == "info" for event in logs["scheduler.jsonl"])


def test_a_database_that_is_down_is_75_and_the_logs_keep_their_shapes(cron: CronHost) -> None:
    assert cron.run_all() == [0, 0]
    assert cron.run_all(BNPL_DATABASE_URL=UNREACHABLE) == [75, 75]
    logs = log_shapes(cron.logs)
    assert len(logs["sweep.jsonl"]) == 1  # a failed sweep has no result to append
    assert logs["sweep.log"][-1].startswith("error: database unavailable")
    assert len(logs["verify.jsonl"]) == 1  # verify runs after a sweep that succeeded
    failures = [event for event in logs["scheduler.jsonl"] if event["level"] == "error"]
    assert [(event["job"], event["exit_code"]) for event in failures] == [
        ("sweep", 75),
        ("purge", 75),
    ]


def test_another_sweep_holding_the_lock_is_75_on_both_lines(cron: CronHost, engine: Engine) -> None:
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        try:
            codes = cron.run_all()
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})
    assert codes == [75, 75]
    logs = log_shapes(cron.logs)
    assert logs["sweep.log"] == ["error: another sweep holds the lock; retry later"]
    assert "verify.jsonl" not in logs
    [failure] = [event for event in logs["scheduler.jsonl"] if event["level"] == "error"]
    assert (failure["job"], failure["exit_code"]) == ("sweep", 75)
    assert logs["scheduler.jsonl"][-1]["message"] == "idempotency keys purged"


def test_a_configuration_error_is_78_and_the_scheduler_logs_it_as_json(cron: CronHost) -> None:
    assert cron.run_all(BNPL_TIMEZONE="Mars/Olympus_Mons") == [78, 78]
    logs = log_shapes(cron.logs)
    assert logs["sweep.jsonl"] == []
    [message] = logs["sweep.log"]
    assert message.startswith("error: BNPL_TIMEZONE")
    [failure] = logs["scheduler.jsonl"]
    assert (failure["job"], failure["error"], failure["exit_code"]) == ("start", "ConfigError", 78)
    assert "BNPL_TIMEZONE" in failure["message"]


def test_a_broken_invariant_makes_the_nightly_line_69(cron: CronHost, engine: Engine) -> None:
    seed(engine, 1, date(2024, 1, 1))
    with engine.begin() as connection:
        connection.execute(text("UPDATE plans SET total_amount = 301"))
    assert cron.run(cron.line_running("verify")) == 69
    logs = log_shapes(cron.logs)
    [report] = logs["verify.jsonl"]
    broken = [check["check"] for check in report["checks"] if check["violations"]]
    assert (report["ok"], broken) == (False, ["plan_totals"])
    assert logs["verify.log"] == ["error: invariants broken: plan_totals"]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _sweep_waits_for_the_debt_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'bnplctl' AND wait_event = 'advisory'"
            )
        ).scalar_one()
    return bool(waiting)


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").exists(), reason="needs Linux /proc")
def test_a_sigterm_during_the_hourly_line_is_143_and_logged_as_json(
    cron: CronHost, engine: Engine
) -> None:
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock_shared(:id)"), {"id": DEBT_LOCK_ID})
        line = cron.start(cron.line_running("scheduler run"))
        try:
            wait_until(lambda: _sweep_waits_for_the_debt_lock(engine), "the sweep to wait")
            for child in _children(line.pid):
                os.kill(child, signal.SIGTERM)
        finally:
            holder.rollback()
            code = line.wait(timeout=60)
    assert code == 143
    events = log_shapes(cron.logs)["scheduler.jsonl"]
    assert [event["level"] for event in events] == ["info", "error"]  # no purge after it
    assert (events[-1]["error"], events[-1]["exit_code"]) == ("Terminated", 143)
