"""The crontab bnplctl prints for its installation, run as cron runs it: each job line under
``env -i`` with cron's own few variables (``SHELL=/bin/sh``, ``PATH=/usr/bin:/bin``,
``HOME``, ``LOGNAME``) and the crontab's environment lines, through ``/bin/sh``, from
``$HOME``. Nothing is put on PATH for it: the crontab must name what it runs. Each job
writes its own log file (``--log-file``), one JSON line a run with its exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
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
from sqlalchemy.engine import Engine, make_url

from bnplctl.services.locks import DEBT_LOCK_ID
from bnplctl.services.sweep import SWEEP_LOCK_ID
from tests.conftest import Cli, DatabaseUnderTest
from tests.test_sweep import seed

ROOT = Path(__file__).resolve().parents[1]
CRONTAB_EXAMPLE = ROOT / "crontab.example"
EXAMPLE_EXECUTABLE = "/opt/bnplctl/bin/bnplctl"
EXAMPLE_ENV_FILE = "/etc/bnplctl/bnplctl.env"
EXAMPLE_ENVIRONMENT = {
    "BNPL_DATABASE_URL": "postgresql://bnpl:change-me@db.internal:5432/bnpl",
    "BNPL_SECRET_KEY_FILE": "/etc/bnplctl/secret.key",
    "BNPL_TIMEZONE": "Asia/Tashkent",
}
INSTALLED = Path(sys.executable).parent / "bnplctl"  # the console script pip installed
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"
SEEDED_PHONE = "+998901234567"  # tests.test_sweep.seed's: no log may show it
ASSIGNMENT = re.compile(r"([A-Za-z_]\w*)\s*=\s*(.*)")
# The lines run whenever the test does, not at their hour: with the sweep's slot at
# midnight the hourly line's due day is today, as it is at 02:00 and after. (Between
# midnight and BNPL_SWEEP_AT it is yesterday, and the hourly line rightly sweeps that day
# too: a second run these tests would otherwise find in the small hours.)
PAST_THE_SLOT = {"BNPL_SWEEP_AT": "00:00"}


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
        assert "%" not in fields[5]  # cron turns % into a line break
        commands.append(fields[5])
    return Crontab(environment, tuple(commands))


@dataclass
class CronHost:
    """A crontab's job lines, run as cron runs them, from ``home``."""

    crontab: Crontab
    home: Path
    changes: dict[str, str] = field(default_factory=dict)

    def line_running(self, words: str) -> str:
        [command] = [command for command in self.crontab.commands if words in command]
        return command

    def argv(self, command: str, **changes: str) -> list[str]:
        """``env -i``: cron's own variables, then the crontab's lines (what an operator
        edited in them: ``changes``); nothing inherited from the test process."""
        environment = (
            {"HOME": str(self.home), "LOGNAME": "bnpl", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
            | self.crontab.environment
            | self.changes
            | changes
        )
        assignments = [f"{name}={value}" for name, value in environment.items()]
        return ["/usr/bin/env", "-i", *assignments, "/bin/sh", "-c", command]

    def run(self, command: str, **changes: str) -> int:
        """The line's exit status; nothing may reach stdout or stderr (cron would mail it)."""
        done = subprocess.run(
            self.argv(command, **changes),
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
        return subprocess.Popen(self.argv(command), cwd=self.home, text=True)


def operator_environment(**settings: str) -> dict[str, str]:
    """The operator's shell: its own environment without BNPL_*, then ``settings``."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("BNPL_")}
    return kept | settings


def print_crontab(home: Path, *options: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``bnplctl scheduler crontab`` as the installed console script, from ``home``."""
    assert INSTALLED.exists(), f"no console script at {INSTALLED}: pip install the project"
    return subprocess.run(
        [str(INSTALLED), "scheduler", "crontab", *options],
        env=operator_environment(**settings),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "var" / "log" / "bnplctl"  # not there yet: the jobs make it


@pytest.fixture
def cron(
    tmp_path: Path, test_database: DatabaseUnderTest, key_file: Path, log_dir: Path
) -> CronHost:
    home = tmp_path / "home"
    home.mkdir()
    printed = print_crontab(
        home,
        "--log-dir",
        str(log_dir),
        BNPL_DATABASE_URL=test_database.url,
        BNPL_SECRET_KEY_FILE=str(key_file),
    )
    return CronHost(parse_crontab(printed.stdout), home, dict(PAST_THE_SLOT))


def log_lines(log_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each log file's lines, each checked to be a JSON object with the keys every line
    has, and none showing personal data."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(log_dir.iterdir()):
        content = path.read_text(encoding="utf-8")
        assert SEEDED_PHONE not in content, path.name
        assert content.endswith("\n"), path.name
        events = [json.loads(line) for line in content.splitlines()]
        assert all({"ts", "level", "message"} <= event.keys() for event in events), path.name
        found[path.name] = events
    return found


def ends(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The lines that end a command: (command, exit code)."""
    return [(event["command"], event["exit_code"]) for event in events if "command" in event]


def sweep_runs(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, outcome FROM sweep_runs ORDER BY id")).all()
    return [(int(row.id), str(row.outcome)) for row in rows]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_crontab_example_is_what_the_command_prints_for_the_documented_installation(
    no_database: None, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BNPL_DATA_DIR")
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    for name, value in EXAMPLE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    assert result.exit_code == 0, result.output
    assert result.stdout == CRONTAB_EXAMPLE.read_text(encoding="utf-8")
    assert "change-me" not in result.output
    assert f"into {EXAMPLE_ENV_FILE} (mode 0600)" in result.stderr


def test_the_shipped_example_runs_under_cron_once_its_paths_are_this_installation(
    tmp_path: Path, test_database: DatabaseUnderTest, key_file: Path, engine: Engine
) -> None:
    """crontab.example as an operator installs it, changing only what names their host:
    the executable, the log directory, the env file (holding the test's database) and
    the key."""
    example = CRONTAB_EXAMPLE.read_text(encoding="utf-8")
    logs = tmp_path / "logs"
    env_file = tmp_path / "bnplctl.env"
    env_file.write_text(f"BNPL_DATABASE_URL={test_database.url}\n")
    installed = (
        example.replace(EXAMPLE_EXECUTABLE, str(INSTALLED))
        .replace("/var/log/bnplctl/", f"{logs}/")
        .replace(EXAMPLE_ENV_FILE, str(env_file))
        .replace("/etc/bnplctl/secret.key", str(key_file))
    )
    assert "/etc/" not in installed and "/opt/" not in installed
    home = tmp_path / "home"
    home.mkdir()
    host = CronHost(parse_crontab(installed), home, dict(PAST_THE_SLOT))
    seed(engine, 2, date(2024, 1, 1))
    assert host.run_all() == [0, 0]
    assert sweep_runs(engine) == [(1, "SUCCEEDED")]
    assert sorted(log_lines(logs)) == ["scheduler.jsonl", "sweep.jsonl", "verify.jsonl"]


def test_the_printed_crontab_names_this_installation(
    cron: CronHost, test_database: DatabaseUnderTest, key_file: Path, log_dir: Path
) -> None:
    environment = cron.crontab.environment
    assert environment["PATH"] == "/usr/bin:/bin"  # cron's: nothing of the venv
    assert environment["BNPL_ACTOR"] == "cron"
    assert environment["BNPL_DATABASE_URL"] == test_database.url
    assert environment["BNPL_SECRET_KEY_FILE"] == str(key_file)
    assert len(cron.crontab.commands) == 2
    for command in cron.crontab.commands:
        assert command.startswith(f"{INSTALLED} ")
        assert ">" not in command  # bnplctl opens its logs itself: no shell redirect
        assert f"--log-file {log_dir}/" in command


def test_each_line_runs_under_cron_and_logs_one_json_line_a_run(
    cron: CronHost, engine: Engine, log_dir: Path
) -> None:
    seed(engine, 2, date(2024, 1, 1))
    assert not log_dir.exists()
    assert cron.run_all() == [0, 0]
    assert cron.run_all() == [0, 0]
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(log_dir.parent.stat().st_mode) == 0o750
    assert sweep_runs(engine) == [(1, "SUCCEEDED"), (2, "SUCCEEDED")]
    logs = log_lines(log_dir)
    assert sorted(logs) == ["scheduler.jsonl", "sweep.jsonl", "verify.jsonl"]
    first, second = logs["sweep.jsonl"]
    assert (first["exit_code"], first["run_id"], first["installments_marked_overdue"]) == (0, 1, 6)
    assert (first["users_marked_debt"], first["level"]) == (2, "info")
    assert (second["exit_code"], second["run_id"], second["installments_marked_overdue"]) == (
        0,
        2,
        0,
    )
    assert second["message"].startswith("already swept for")
    assert [(line["exit_code"], line["ok"]) for line in logs["verify.jsonl"]] == [
        (0, True),
        (0, True),
    ]
    scheduler = logs["scheduler.jsonl"]
    assert [event["message"] for event in scheduler].count("idempotency keys purged") == 2
    assert ends(scheduler) == [("scheduler run", 0), ("scheduler run", 0)]
    with engine.connect() as connection:
        actors = connection.execute(
            text("SELECT DISTINCT actor FROM audit_events WHERE action = 'sweep.run'")
        ).all()
    assert actors == [("cron",)]


def test_a_database_that_is_down_is_75_with_the_error_in_each_log(cron: CronHost) -> None:
    assert cron.run_all() == [0, 0]
    assert cron.run_all(BNPL_DATABASE_URL=UNREACHABLE) == [75, 75]
    logs = log_lines(cron.home.parent / "var" / "log" / "bnplctl")
    failed = logs["sweep.jsonl"][-1]
    assert (failed["level"], failed["exit_code"]) == ("error", 75)
    assert failed["message"].startswith("database unavailable")
    assert len(logs["verify.jsonl"]) == 1  # verify runs after a sweep that succeeded
    failures = [event for event in logs["scheduler.jsonl"] if event.get("job")]
    assert [(event["job"], event["exit_code"]) for event in failures] == [
        ("sweep", 75),
        ("purge", 75),
    ]
    assert ends(logs["scheduler.jsonl"])[-1] == ("scheduler run", 75)


def test_another_sweep_holding_the_lock_is_75_on_both_lines(
    cron: CronHost, engine: Engine, log_dir: Path
) -> None:
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        try:
            codes = cron.run_all()
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})
    assert codes == [75, 75]
    logs = log_lines(log_dir)
    [failed] = logs["sweep.jsonl"]
    assert (failed["exit_code"], failed["message"]) == (
        75,
        "another sweep holds the lock; retry later",
    )
    assert "verify.jsonl" not in logs
    [failure] = [event for event in logs["scheduler.jsonl"] if event.get("job") == "sweep"]
    assert failure["exit_code"] == 75
    assert ends(logs["scheduler.jsonl"]) == [("scheduler run", 75)]


def test_a_configuration_error_is_78_and_logged(cron: CronHost, log_dir: Path) -> None:
    assert cron.run_all(BNPL_TIMEZONE="Mars/Olympus_Mons") == [78, 78]
    logs = log_lines(log_dir)
    [failed] = logs["sweep.jsonl"]
    assert failed["exit_code"] == 78
    assert failed["message"].startswith("BNPL_TIMEZONE")
    start, end = logs["scheduler.jsonl"]
    assert (start["job"], start["error"], start["exit_code"]) == ("start", "ConfigError", 78)
    assert end["exit_code"] == 78


def test_a_broken_invariant_makes_the_nightly_line_69(
    cron: CronHost, engine: Engine, log_dir: Path
) -> None:
    seed(engine, 1, date(2024, 1, 1))
    with engine.begin() as connection:
        connection.execute(text("UPDATE plans SET total_amount = 301"))
    assert cron.run(cron.line_running("verify")) == 69
    [report] = log_lines(log_dir)["verify.jsonl"]
    broken = [check["check"] for check in report["checks"] if check["violations"]]
    assert (report["ok"], broken, report["exit_code"]) == (False, ["plan_totals"], 69)
    assert report["message"] == "invariants broken: plan_totals"


def test_a_log_directory_that_cannot_be_made_is_74_on_stderr_for_cron_to_mail(
    cron: CronHost, tmp_path: Path, engine: Engine
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    line = cron.line_running("debt sweep").replace(
        str(tmp_path / "var" / "log" / "bnplctl"), str(blocked / "logs")
    )
    done = subprocess.run(cron.argv(line), cwd=cron.home, capture_output=True, text=True)
    assert done.returncode == 74
    assert done.stderr.startswith("error: cannot write the log file")
    assert sweep_runs(engine) == []  # nothing done that nobody would hear of


def test_a_password_is_never_printed_and_the_jobs_read_it_from_the_env_file(
    tmp_path: Path, test_database: DatabaseUnderTest, key_file: Path, engine: Engine
) -> None:
    """The server trusts local connections, so a password in the URL is ignored by it:
    the URL works from the env file exactly as the operator is told to write it."""
    password = "pw-never-printed"  # noqa: S105
    url = make_url(test_database.url).set(password=password).render_as_string(hide_password=False)
    home = tmp_path / "home"
    home.mkdir()
    env_file = tmp_path / "etc" / "bnplctl.env"
    printed = print_crontab(
        home,
        "--env-file",
        str(env_file),
        "--log-dir",
        str(tmp_path / "logs"),
        BNPL_DATABASE_URL=url,
        BNPL_SECRET_KEY_FILE=str(key_file),
    )
    assert password not in printed.stdout + printed.stderr
    crontab = parse_crontab(printed.stdout)
    assert "BNPL_DATABASE_URL" not in crontab.environment
    assert crontab.environment["BNPL_ENV_FILE"] == str(env_file)
    assert str(env_file) in printed.stderr
    host = CronHost(crontab, home)
    assert host.run(crontab.commands[0]) == 78  # not written yet: said in the log
    [failed] = log_lines(tmp_path / "logs")["sweep.jsonl"]
    assert failed["message"].startswith(f"BNPL_ENV_FILE: cannot read {env_file}")
    env_file.parent.mkdir()
    env_file.write_text(f"BNPL_DATABASE_URL={url}\n")
    env_file.chmod(0o600)
    assert host.run(crontab.commands[0]) == 0
    assert sweep_runs(engine) == [(1, "SUCCEEDED")]
    assert password not in (tmp_path / "logs" / "sweep.jsonl").read_text()


def test_a_password_from_dotenv_is_read_from_that_file(
    no_database: None, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BNPL_DATA_DIR")
    (tmp_path / ".env").write_text("BNPL_DATABASE_URL=postgresql://bnpl:pw-in-dotenv@db/bnpl\n")
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    assert result.exit_code == 0, result.output
    assert "pw-in-dotenv" not in result.output
    crontab = parse_crontab(result.stdout)
    assert crontab.environment["BNPL_ENV_FILE"] == str(tmp_path / ".env")
    assert result.stderr == ""  # the file is there already: nothing to write


def test_the_embedded_database_gets_its_data_directory_spelt_out(
    no_database: None, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    monkeypatch.setenv("BNPL_DATA_DIR", "relative/data")
    monkeypatch.setenv("BNPL_SWEEP_AT", "3:30")
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    assert result.exit_code == 0, result.output
    crontab = parse_crontab(result.stdout)
    assert crontab.environment["BNPL_DATA_DIR"] == str(tmp_path / "relative" / "data")
    assert crontab.environment["BNPL_SWEEP_AT"] == "03:30"
    assert "BNPL_DATABASE_URL" not in crontab.environment
    schedules = [line.split()[:2] for line in result.stdout.splitlines() if "--log-file" in line]
    assert schedules == [["30", "3"], ["45", "*"]]


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
def test_a_sigterm_during_the_hourly_line_is_143_and_logged(
    cron: CronHost, engine: Engine, log_dir: Path
) -> None:
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock_shared(:id)"), {"id": DEBT_LOCK_ID})
        line = cron.start(cron.line_running("scheduler run"))
        try:
            wait_until(lambda: _sweep_waits_for_the_debt_lock(engine), "the sweep to wait")
            shell = _children(line.pid)  # env execs sh, which runs bnplctl
            for child in shell or [line.pid]:
                os.kill(child, signal.SIGTERM)
        finally:
            holder.rollback()
            code = line.wait(timeout=60)
    assert code == 143
    events = log_lines(log_dir)["scheduler.jsonl"]
    assert [event["level"] for event in events] == ["info", "error", "error"]  # no purge after
    assert (events[1]["error"], events[1]["exit_code"]) == ("Terminated", 143)
    assert ends(events) == [("scheduler run", 143)]


def test_the_secret_key_is_never_a_log_file(cli: Cli, key_file: Path) -> None:
    before = key_file.read_bytes()
    link = key_file.parent / "looks-like-a-log.jsonl"
    link.symlink_to(key_file)
    try:
        for path in (str(key_file), str(link)):
            result = cli("debt", "sweep", "--log-file", path)
            assert result.exit_code == 2, result.output
            assert "secret key" in result.stderr
    finally:
        link.unlink()
    assert key_file.read_bytes() == before


def test_an_env_file_without_the_database_is_78_never_an_empty_embedded_one(
    cron: CronHost, tmp_path: Path, log_dir: Path
) -> None:
    """The URL line not written yet (or misspelt): the jobs must not start an embedded
    database of their own and report success on it."""
    env_file = tmp_path / "bnplctl.env"
    env_file.write_text("BNPL_DATABASE_URI=postgresql://typo@db/bnpl\n")
    environment = {name: value for name, value in cron.crontab.environment.items()}
    del environment["BNPL_DATABASE_URL"]
    host = CronHost(Crontab(environment, cron.crontab.commands), cron.home)
    assert host.run(cron.line_running("debt sweep"), BNPL_ENV_FILE=str(env_file)) == 78
    [failed] = log_lines(log_dir)["sweep.jsonl"]
    assert failed["message"].startswith(f"BNPL_ENV_FILE: {env_file} sets no BNPL_DATABASE_URL")
    assert not (cron.home / ".local").exists()  # no embedded server was made


def test_the_key_is_never_a_log_by_a_hard_link_nor_under_a_bad_setting(
    cli: Cli, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key_file.read_bytes()
    hard_link = key_file.parent / f"{tmp_path.name}.jsonl"
    os.link(key_file, hard_link)
    try:
        assert cli("verify", "--log-file", str(hard_link)).exit_code == 2
        monkeypatch.setenv("BNPL_SWEEP_AT", "25:00")  # the settings cannot be read
        assert cli("debt", "sweep", "--log-file", str(key_file)).exit_code == 2
        monkeypatch.setenv("BNPL_ENV_FILE", str(tmp_path / "missing.env"))
        assert cli("debt", "sweep", "--log-file", str(key_file)).exit_code == 2
        env_file = tmp_path / "bnplctl.env"
        env_file.write_text("BNPL_GRACE_DAYS=0\n")
        monkeypatch.setenv("BNPL_ENV_FILE", str(env_file))
        assert cli("verify", "--log-file", str(env_file)).exit_code == 2
        assert env_file.read_text() == "BNPL_GRACE_DAYS=0\n"
    finally:
        hard_link.unlink()
    assert key_file.read_bytes() == before


def test_a_fifo_without_a_reader_is_74_at_once(cli: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    result = cli("verify", "--log-file", str(fifo))
    assert result.exit_code == 74
    assert "cannot write the log file" in result.stderr


def test_a_log_directory_removed_during_the_run_is_made_again(tmp_path: Path) -> None:
    from bnplctl.joblog import append_json_line

    path = tmp_path / "gone" / "sweep.jsonl"
    append_json_line(path, {"n": 1})
    path.unlink()
    path.parent.rmdir()
    append_json_line(path, {"n": 2})
    assert path.read_text() == '{"n": 2}\n'
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bnpl:p@ss-secret@db.internal:5432/bnpl",  # an '@' not percent-encoded
        "postgresql://bnpl@db.internal:54x2/bnpl",
        "host=db.internal password=ss-secret",
    ],
)
def test_a_malformed_url_is_78_and_never_shows_the_password(
    no_database: None, cli: Cli, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", url)
    for argv in (("scheduler", "crontab"), ("verify",)):
        result = cli(*argv)
        assert result.exit_code == 78, result.output
        assert "ss-secret" not in result.output
        assert result.stderr.startswith("error: BNPL_DATABASE_URL")


def test_a_secret_in_the_urls_options_is_never_printed(
    no_database: None, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://bnpl@db/bnpl?sslpassword=tls-secret")
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    assert result.exit_code == 0, result.output
    assert "tls-secret" not in result.output
    assert "BNPL_ENV_FILE" in parse_crontab(result.stdout).environment


def test_the_env_file_holding_the_url_is_kept_even_when_the_url_is_exported_too(
    no_database: None, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://bnpl:pw-both@db/bnpl"
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"BNPL_DATABASE_URL={url}\n")
    monkeypatch.setenv("BNPL_ENV_FILE", str(env_file))
    monkeypatch.setenv("BNPL_DATABASE_URL", url)
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    assert result.exit_code == 0, result.output
    assert parse_crontab(result.stdout).environment["BNPL_ENV_FILE"] == str(env_file)
    assert result.stderr == ""


def test_settings_left_at_their_defaults_are_pinned_against_an_env_file_in_home(
    no_database: None, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://bnpl@db/bnpl")
    result = cli("scheduler", "crontab", "--executable", EXAMPLE_EXECUTABLE)
    environment = parse_crontab(result.stdout).environment
    assert (environment["BNPL_TIMEZONE"], environment["BNPL_GRACE_DAYS"]) == ("UTC", "0")
    assert environment["BNPL_SWEEP_AT"] == "02:00"


def test_a_path_too_long_for_cron_is_refused(no_database: None, cli: Cli) -> None:
    result = cli("scheduler", "crontab", "--log-dir", "/var/log/" + "x" * 900)
    assert result.exit_code == 2
    assert "longer than cron accepts" in result.stderr


def test_a_nightly_line_that_failed_makes_status_unhealthy_until_a_line_sweeps(
    cron: CronHost, engine: Engine
) -> None:
    """What a monitor sees under the same cron environment: the day's sweep is due (its
    BNPL_SWEEP_AT an hour ago, past the grace), the 02:00 line failed (lock held), so
    `status` is 69 naming the missing sweep; the catch-up line sweeps, `status` is 0."""
    from datetime import UTC, datetime, timedelta

    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%H:%M")
    due = {"BNPL_TIMEZONE": "UTC", "BNPL_SWEEP_AT": an_hour_ago}
    status = f"{INSTALLED} status -o json"
    seed(engine, 1, date(2024, 1, 1))
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
        try:
            assert cron.run(cron.line_running("debt sweep"), **due) == 75
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})
    unhealthy = subprocess.run(cron.argv(status, **due), capture_output=True, text=True)
    assert unhealthy.returncode == 69, unhealthy.stderr
    report = json.loads(unhealthy.stdout)
    assert any("sweep" in problem for problem in report["problems"]), report["problems"]
    assert cron.run(cron.line_running("scheduler run"), **due) == 0
    healthy = subprocess.run(cron.argv(status, **due), capture_output=True, text=True)
    assert healthy.returncode == 0, healthy.stdout
