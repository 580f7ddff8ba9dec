"""The CLI shell: help stays light, the error boundary, versions, usage errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from bnplctl import __version__
from bnplctl.services import users as user_service
from tests.conftest import Cli
from tests.helpers import JOHN, add_args

HEAVY = ("sqlalchemy", "sqlmodel", "phonenumbers", "cryptography", "psycopg2", "alembic")


@pytest.mark.usefixtures("no_database")
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["users", "--help"],
        ["users", "import", "--help"],
        # The --status choices are the status enums: built without the models or the ORM.
        ["users", "list", "--help"],
        ["plans", "list", "--help"],
        ["installments", "list", "--help"],
        ["refunds", "list", "--help"],
    ],
)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        f"sys.argv = ['bnplctl', *{argv!r}]\n"
        "from bnplctl.cli.app import main\n"  # the console script's own entry point
        "try:\n    main()\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
        "print(sorted(m for m in ('bnplctl.cli.output', 'bnplctl.pii') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "Example:" in completed.stdout
    # Neither the heavy libraries, nor the renderers or the personal-data code (~7 ms).
    assert completed.stdout.strip().splitlines()[-2:] == ["[]", "[]"]


@pytest.mark.usefixtures("no_database")
@pytest.mark.parametrize(
    ("argv", "loaded"),
    [(["--help"], []), (["users", "--help"], ["users"]), (["debt", "show", "--help"], ["debt"])],
)
def test_a_command_group_is_loaded_only_when_named(argv: list[str], loaded: list[str]) -> None:
    probe = (
        "import sys\n"
        "from bnplctl.cli.app import LAZY_GROUPS, app\n"
        f"try:\n    app({argv!r}, prog_name='bnplctl')\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "print(sorted(n for n, (module, _) in LAZY_GROUPS.items() if module in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip().splitlines()[-1] == repr(loaded)


@pytest.mark.usefixtures("no_database")
def test_the_root_help_lists_each_lazy_group_with_its_own_line() -> None:
    from bnplctl.cli.app import LAZY_GROUPS, load_group

    for name, (_, line) in LAZY_GROUPS.items():
        group = load_group(name)
        assert (group.name, group.get_short_help_str(200)) == (name, line)


@pytest.mark.usefixtures("no_database")
def test_a_mistyped_command_is_a_usage_error_with_a_suggestion(cli: Cli) -> None:
    mistyped = cli("user", "list")
    assert mistyped.exit_code == 2
    assert "No such command 'user'. Did you mean 'users'?" in mistyped.stderr
    unknown = cli("nope")
    assert unknown.exit_code == 2
    assert "No such command 'nope'." in unknown.stderr
    assert "Did you mean" not in unknown.stderr


ORM = ("sqlmodel", "sqlalchemy.orm", "bnplctl.models", "bnplctl.schemas")
_ONE_USER = (
    '[{"user_id": "usr-009", "name": "Ann Lee", "phone": "+998901234599",'
    ' "passport": "AB1234599", "card": "4111111111111111", "dob": "1990-01-01"}]'
)


@pytest.mark.parametrize(
    ("argv", "stdin", "code"),
    [
        (["debt", "show", "usr-404"], "", 4),
        (["debt", "report"], "", 0),
        (["debt", "sweep", "--dry-run"], "", 0),
        (["webhooks", "files"], "", 0),
        (["webhooks", "ingest", "-", "--dry-run"], '[{"refund_id": "R-1", "status": "failed"}]', 5),
        (["payments", "import", "-"], '[{"reference": "P-1", "amount": "1", "user_id": "u"}]', 5),
        (["users", "import", "-"], _ONE_USER, 0),
    ],
)
def test_plain_sql_commands_never_load_the_orm(
    argv: list[str], stdin: str, code: int, engine: object
) -> None:
    # These commands run plain SQL on a Core connection: SQLModel, the ORM, the models
    # and the pydantic schemas stay unloaded (a third of a second of every start).
    probe = (
        "import sys\n"
        "from bnplctl.cli.app import app\n"
        f"try:\n    app({argv!r}, prog_name='bnplctl')\n"
        f"except SystemExit as exit:\n    assert exit.code == {code}, exit.code\n"
        f"print(sorted(m for m in {ORM!r} if m in sys.modules), file=sys.stderr)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], input=stdin, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(
    cli: Cli, engine: object, tmp_path: Path, fmt: str
) -> None:
    # bnplctl users list -o csv | head -1: no message, no traceback, exit 128 + SIGPIPE.
    from bench.run import write_users

    source = tmp_path / "users.csv"
    write_users(source, 2_000)  # a listing of a few hundred kB: more than a pipe holds
    assert cli("users", "import", str(source)).exit_code == 0
    command = [sys.executable, "-m", "bnplctl", "users", "list", "--limit", "2000", "-o", fmt]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as listing:
        assert listing.stdout is not None and listing.stderr is not None
        assert listing.stdout.readline()
        listing.stdout.close()
        stderr = listing.stderr.read()
        listing.wait(timeout=60)

    assert (listing.returncode, stderr) == (141, b"")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "argv",
    [
        *(["debt", "report", "-o", fmt] for fmt in ("table", "json", "jsonl", "csv")),
        ["--version"],  # written while the arguments are parsed, before any command runs
        ["--help"],
    ],
)
def test_output_that_cannot_be_written_is_one_line_and_exit_74(
    engine: object, argv: list[str]
) -> None:
    command = [sys.executable, "-m", "bnplctl", *argv]
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True)

    assert done.returncode == 74
    assert done.stderr == "error: cannot write the output (No space left on device)\n"


def test_output_to_a_closed_standard_output_is_one_line_and_exit_74(engine: object) -> None:
    import os

    done = subprocess.run(
        [sys.executable, "-m", "bnplctl", "debt", "report"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )

    assert done.returncode == 74
    assert done.stderr == "error: cannot write the output (standard output is closed)\n"


@pytest.mark.parametrize("argv", [["users", "import", "-"], ["webhooks", "ingest", "-"]])
def test_reading_a_closed_standard_input_is_exit_66(engine: object, argv: list[str]) -> None:
    # cron and service managers may start a command with file descriptor 0 closed.
    import os

    done = subprocess.run(
        [sys.executable, "-m", "bnplctl", *argv],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(0),
    )

    assert (done.returncode, done.stderr) == (66, "error: -: standard input is closed\n")


def test_a_value_to_ask_for_with_standard_input_closed_is_a_usage_error(engine: object) -> None:
    import os

    argv = ["users", "add", "--name", "Ann Lee", "--phone", "+998901234599", "--dob", "1990-01-01"]
    done = subprocess.run(
        [sys.executable, "-m", "bnplctl", *argv],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(0),
    )

    assert done.returncode == 2
    assert done.stderr == (
        "error: --passport: required (standard input ended before it was given)\n"
    )


@pytest.mark.parametrize("fmt", ["json", "table", "csv"])
def test_a_stdout_that_cannot_encode_a_name_still_gets_the_output(
    cli: Cli, engine: object, fmt: str
) -> None:
    # A latin-1 or ASCII locale and a Cyrillic name: JSON escapes it (and stays the same
    # document), other formats write escapes; nothing fails after the work is done.
    import json
    import os

    name = "Малика Каримова"
    assert cli(*add_args(dict(JOHN, name=name))).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "bnplctl", "users", "show", JOHN["user_id"], "-o", fmt],
        capture_output=True,
        env=dict(os.environ, PYTHONIOENCODING="ascii"),
    )

    assert (done.returncode, done.stderr) == (0, b"")
    text = done.stdout.decode("ascii")
    if fmt == "json":
        assert json.loads(text)["full_name"] == name
    else:
        assert name.encode("ascii", "backslashreplace").decode() in text


@pytest.mark.usefixtures("no_database")
def test_python_dash_m_and_version() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bnplctl", "--version"], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == f"bnplctl {__version__}"
    # The package says the version of the CHANGELOG's latest release.
    import re
    from importlib.metadata import version

    changelog = (Path(__file__).parents[1] / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert releases[0] == __version__ == version("bnplctl")


def test_internal_error_is_one_line_and_debug_shows_the_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(user_service, "list_users", broken)
    plain = cli("users", "list")
    assert plain.exit_code == 1
    assert plain.stderr.strip() == (
        "error: internal error (RuntimeError); rerun with --debug for the traceback"
    )
    debug = cli("--debug", "users", "list")
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "RuntimeError: boom" in debug.stderr


def test_connection_lost_mid_command_exits_75(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(user_service, "list_users", lost)
    result = cli("users", "list")
    assert result.exit_code == 75
    assert result.stderr.strip() == (
        "error: database unavailable, retry later: server closed the connection"
    )


@pytest.mark.usefixtures("no_database")
def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli("users", "list", "--limit", "0").exit_code == 2
    assert cli("users", "list", "-o", "xml").exit_code == 2
    assert cli("nope").exit_code == 2


def test_bad_since_is_a_usage_error(cli: Cli) -> None:
    result = cli("audit", "list", "--since", "yesterday")
    assert result.exit_code == 2
    assert "Invalid value for '--since': must be an ISO date or timestamp" in result.stderr


def test_debug_traceback_withholds_server_detail_lines(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "new row violates check constraint\nDETAIL:  Failing row contains (+998901234567)."
        )

    monkeypatch.setattr(user_service, "list_users", failing)
    result = cli("--debug", "users", "list")
    assert result.exit_code == 1
    assert "+998901234567" not in result.stderr
    assert "DETAIL:  (withheld" in result.stderr


@pytest.mark.parametrize("noun", ["users", "plans", "refunds", "audit", "webhooks"])
def test_a_limit_beyond_any_list_is_a_usage_error(cli: Cli, noun: str) -> None:
    command = "files" if noun == "webhooks" else "list"
    result = cli(noun, command, "--limit", "99999999999999999999")
    assert result.exit_code == 2
    assert "--limit" in result.stderr


@pytest.mark.parametrize(
    "actor", ["x" * 101, "ops\x1b[2J", "", "  ", "4111111111111111", "ops\u202eadmin"]
)
def test_an_actor_the_audit_trail_cannot_hold_is_a_usage_error_or_a_setting_error(
    cli: Cli, engine: object, monkeypatch: pytest.MonkeyPatch, actor: str
) -> None:
    """Too long, a control or bidi character, a card number, nothing at all: as an option
    (before or after the command) exit 2 naming it; as BNPL_ACTOR exit 78 naming that,
    except a blank one, which is unset as every blank setting is. Never echoed."""
    for argv in (("--actor", actor, "debt", "report"), ("debt", "report", "--actor", actor)):
        result = cli(*argv)
        assert result.exit_code == 2, (argv, result.stderr)
        assert "Invalid value for '--actor'" in result.stderr
        assert actor.strip() == "" or actor not in result.output
    monkeypatch.setenv("BNPL_ACTOR", actor)
    result = cli("debt", "report")
    if actor.strip():
        assert result.exit_code == 78, result.stderr
        assert result.stderr.startswith("error: BNPL_ACTOR: ")
        assert actor not in result.output
    else:
        assert result.exit_code == 0, result.stderr
    # ``--actor`` after the command wins over BNPL_ACTOR, a malformed one too (cron lines
    # write it there); before the command, it does as well.
    for argv in (("debt", "report", "--actor", "ops"), ("--actor", "ops", "debt", "report")):
        result = cli(*argv)
        assert result.exit_code == 0, (argv, result.stderr)


def test_an_actor_after_the_command_is_the_one_audited_over_bnpl_actor(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import JOHN, add_args

    monkeypatch.setenv("BNPL_ACTOR", "op 123456")  # malformed: a number of 6 digits
    assert cli(*add_args(JOHN), "--actor", "clerk").exit_code == 0
    with engine.connect() as connection:
        actors = connection.execute(text("SELECT DISTINCT actor FROM audit_events")).scalars()
        assert list(actors) == ["clerk"]


# --- the quick exit of the console script ------------------------------------------------

_EXIT_PROBE = """
import atexit, sys
from pathlib import Path
marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("atexit ran"))
sys.argv = ["bnplctl", *sys.argv[2:]]
from bnplctl.cli.app import run
run()
"""


@pytest.mark.usefixtures("no_database")
@pytest.mark.parametrize(
    ("argv", "code", "stdout"),
    [
        (["--version"], 0, f"bnplctl {__version__}\n"),
        (["users", "list", "--limit", "0"], 2, ""),
        (["plans", "preview", "--amount", "500.00", "-o", "csv"], 0, "sequence,amount_due"),
    ],
)
def test_the_console_script_exits_with_the_commands_code_after_its_exit_hooks(
    tmp_path: Path, argv: list[str], code: int, stdout: str
) -> None:
    # run() leaves with os._exit: the output must still be whole and flushed, and the
    # atexit hooks (logging, coverage) must still run.
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE, str(marker), *argv], capture_output=True, text=True
    )

    assert done.returncode == code, done.stderr
    assert done.stdout.startswith(stdout)
    assert marker.read_text() == "atexit ran"


def test_run_flushes_then_runs_the_exit_hooks_then_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import atexit
    import os

    from bnplctl.cli import app as app_module

    steps: list[object] = []

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        steps.append(("exit", code))
        raise Exited

    monkeypatch.setattr(sys, "argv", ["bnplctl", "users", "list", "--limit", "0"])
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: steps.append("hooks"))
    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(Exited):
        app_module.run()

    assert steps == ["hooks", ("exit", 2)]


def test_run_waits_for_a_thread_still_running(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from bnplctl.cli import app as app_module

    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=False)
    worker.start()
    monkeypatch.setattr(sys, "argv", ["bnplctl", "--version"])
    try:
        with pytest.raises(SystemExit) as stop:  # the interpreter's own exit, which joins
            app_module.run()
    finally:
        release.set()
        worker.join()
    assert stop.value.code == 0


@pytest.mark.parametrize(
    ("code", "status"), [(None, 0), (0, 0), (3, 3), (256 + 5, 5), ("a message", 1)]
)
def test_exit_status_as_the_interpreter_computes_it(
    capsys: pytest.CaptureFixture[str], code: object, status: int
) -> None:
    from bnplctl.cli.app import _exit_status

    assert _exit_status(code) == status
    assert capsys.readouterr().err == ("a message\n" if isinstance(code, str) else "")


@pytest.mark.parametrize(
    ("failure", "before", "after"),
    [(BrokenPipeError, 0, 141), (OSError, 0, 74), (BrokenPipeError, 3, 3), (None, 0, 0)],
)
def test_a_failed_last_flush_sets_the_exit_code_only_of_a_success(
    failure: type[OSError] | None, before: int, after: int
) -> None:
    import io

    from bnplctl.cli.app import _flush_standard_streams

    class Stream(io.StringIO):
        def flush(self) -> None:
            if failure is not None:
                raise failure

    assert _flush_standard_streams(before, (Stream(), None)) == after


def test_the_actor_comes_from_bnpl_actor_or_actor_anywhere_on_the_line(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--actor`` is the root's option; cron lines and scripts put it after the command
    too (``bnplctl debt sweep --actor cron``)."""
    from sqlalchemy import text

    def last_actor() -> str:
        with engine.connect() as connection:
            actor: str = connection.execute(
                text("SELECT actor FROM audit_events ORDER BY id DESC LIMIT 1")
            ).scalar_one()
        return actor

    for line, expected in (
        (("debt", "sweep", "--actor", "cron"), "cron"),
        (("debt", "sweep", "--actor=cron-2", "-o", "json"), "cron-2"),
        (("--actor", "ops", "debt", "sweep"), "ops"),
        (("debt", "sweep", "--as-of", "2026-01-01", "--actor", "late"), "late"),
    ):
        result = cli(*line)
        assert result.exit_code == 0, (line, result.stderr)
        assert last_actor() == expected, line
    monkeypatch.setenv("BNPL_ACTOR", "nightly")
    assert cli("debt", "sweep").exit_code == 0
    assert last_actor() == "nightly"
    assert cli("debt", "sweep", "--actor", "by-hand").exit_code == 0  # the option wins
    assert last_actor() == "by-hand"
    missing = cli("debt", "sweep", "--actor")
    assert missing.exit_code == 2 and "--actor" in missing.stderr
    # A value that merely looks like the option stays the value of the option before it.
    assert cli("refunds", "create", "--user", "nobody", "--transaction-id", "T",
               "--amount", "1", "--reason", "--actor").exit_code == 4  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_a_stop_cancels_the_statement_waiting_for_a_lock(
    engine: Engine, stop: signal.Signals, code: int, said: str
) -> None:
    """Ctrl-C or SIGTERM (cron's ``timeout``) while the command waits for a lock another
    client holds: the statement is cancelled on the server and the command ends at once
    with its one line (no batch talk: a single command), the lock still held; nothing
    waits for it to be released."""
    import time

    from bnplctl.services.locks import DEBT_LOCK_ID
    from tests.test_crontab import INSTALLED, _sweep_waits_for_the_debt_lock, wait_until

    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": DEBT_LOCK_ID})
        sweep = subprocess.Popen(
            [str(INSTALLED), "debt", "sweep"], stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(lambda: _sweep_waits_for_the_debt_lock(engine), "the sweep to wait")
            sweep.send_signal(stop)
            started = time.monotonic()
            _, stderr = sweep.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            holder.rollback()
    assert sweep.returncode == code, stderr
    assert took < 10  # the lock was still held: the statement was cancelled
    assert stderr == f"error: {said}: what was committed before stays, the rest was rolled back\n"
