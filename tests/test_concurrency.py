"""Races on real connections: rule 2's row lock, and one plan per idempotency key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from bnplctl.errors import DebtUserRefused
from bnplctl.services import idempotency
from bnplctl.services.plans import create_plan, lock_user, public_plans
from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args, unit


def _wait_until_blocked(connection: Connection, timeout: float = 10.0) -> None:
    """Wait until some other bnplctl backend is waiting on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
        connection.rollback()  # pg_stat_activity is a snapshot per transaction
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the other transaction never waited for the lock")


class Worker(threading.Thread):
    """Runs ``target`` in a thread, keeping its result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_call = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc


def _create(key: str | None = None, before: Callable[[], None] | None = None) -> dict[str, Any]:
    with unit() as tx:
        session = tx.session

        def work() -> dict[str, Any]:
            if before is not None:
                lock_user(session, "usr-001")  # as create_plan does first
                before()
            plan = create_plan(
                session,
                user_id="usr-001",
                total=Decimal("300.00"),
                count=3,
                start=date(2026, 1, 1),
                merchant_reference=None,
                actor="test",
            )
            return public_plans(session, [plan])[0]

        result, _ = idempotency.run_once(
            session, key=key, command="plans.create", request={"amount": "300"}, work=work
        )
        return result


def test_a_sweep_marking_the_user_blocks_a_concurrent_plan(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    with engine.connect() as sweep, engine.connect() as observer:
        # The "sweep" locks the user and marks it DEBT_USER, but has not committed yet.
        sweep.execute(text("SELECT 1 FROM users WHERE user_id = 'usr-001' FOR UPDATE"))
        sweep.execute(text("UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'usr-001'"))
        creator = Worker(_create)
        creator.start()
        _wait_until_blocked(observer)
        sweep.commit()
        creator.join(timeout=10)

    assert not creator.is_alive()
    assert isinstance(creator.error, DebtUserRefused)
    assert row_counts(engine)["plans"] == 0


def test_a_plan_in_flight_holds_the_user_until_it_commits(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    creator = Worker(lambda: _create(before=hold))
    creator.start()
    assert started.wait(10)
    time.sleep(0.1)  # the creator now holds the row lock on the user
    with engine.connect() as sweep, engine.connect() as observer:
        marker = Worker(
            lambda: sweep.execute(
                text("UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'usr-001'")
            )
        )
        marker.start()
        _wait_until_blocked(observer)
        release.set()
        creator.join(10)
        marker.join(10)
        sweep.commit()
    assert creator.error is None and marker.error is None
    counts = row_counts(engine)
    assert (counts["plans"], counts["installments"]) == (1, 3)


def test_racing_requests_with_one_key_create_one_plan(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    first = Worker(lambda: _create("race-1", before=hold))
    first.start()
    assert started.wait(10)
    second = Worker(lambda: _create("race-1"))
    second.start()
    with engine.connect() as observer:
        _wait_until_blocked(observer)  # the second waits on the first's key row
    release.set()
    first.join(10)
    second.join(10)

    assert first.error is None and second.error is None
    assert first.result == second.result
    counts = row_counts(engine)
    assert (counts["plans"], counts["installments"], counts["idempotency_keys"]) == (1, 3, 1)
    assert cli("verify").exit_code == 0  # rule 9 holds after the race


@pytest.mark.parametrize("attempts", [4])
def test_parallel_cli_processes_with_one_key(cli: Cli, engine: Engine, attempts: int) -> None:
    import subprocess
    import sys

    assert cli(*add_args(JOHN)).exit_code == 0
    command = [sys.executable, "-m", "bnplctl", "plans", "create", "--user", "usr-001",
               "--amount", "120", "--idempotency-key", "proc-race", "-o", "json"]  # fmt: skip
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(attempts)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0] * attempts, outputs
    assert len({stdout for stdout, _ in outputs}) == 1, outputs
    assert row_counts(engine)["plans"] == 1
    assert cli("verify").exit_code == 0  # rule 9 holds after the race


def test_an_ingest_waits_for_a_refund_in_flight_and_sees_its_outcome(
    cli: Cli, engine: Engine, tmp_path: Any
) -> None:
    import json
    import subprocess
    import sys

    assert cli(*add_args(JOHN)).exit_code == 0
    plan = json.loads(
        cli("plans", "create", "--user", "usr-001", "--amount", "300", "-o", "json").stdout
    )
    cli("refunds", "create", "--user", "usr-001", "--transaction-id", "R-1",
        "--amount", "50", "--plan", str(plan["id"]))  # fmt: skip
    source = tmp_path / "late.csv"
    source.write_text("refund_id,status,merchant_reference\nR-1,approved,M\n")
    command = [sys.executable, "-m", "bnplctl", "webhooks", "ingest", str(source), "-o", "json"]
    with engine.connect() as holder, engine.connect() as observer:
        # A back-office rejection in flight holds the refund's row.
        holder.execute(text("SELECT id FROM refunds WHERE transaction_id = 'R-1' FOR UPDATE"))
        ingest = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _wait_until_blocked(observer)
        holder.execute(text("UPDATE refunds SET status = 'REJECTED' WHERE transaction_id = 'R-1'"))
        holder.commit()
    stdout, stderr = ingest.communicate(timeout=60)

    assert ingest.returncode == 5, stderr
    summary = json.loads(stdout)
    assert (summary["applied"], summary["conflict"]) == (0, 1)
    with engine.connect() as connection:
        due = connection.execute(text("SELECT sum(amount_due) FROM installments")).scalar_one()
        status = connection.execute(text("SELECT status FROM refunds")).scalar_one()
    assert (status, due) == ("REJECTED", Decimal("300.00"))
    assert cli("verify").exit_code == 0  # rule 9 holds after the race


def test_a_file_killed_outright_keeps_the_counts_of_its_committed_chunks(
    cli: Cli, engine: Engine, tmp_path: Any
) -> None:
    """kill -9 leaves no time to record anything: the file's record must already hold
    what its committed chunks did (chunks of 1,000, 2,500, then 5,000 rows)."""
    import json
    import signal
    import subprocess
    import sys

    from bnplctl.context import CHUNK_ROWS
    from bnplctl.importing.batch import chunk_sizes

    source = tmp_path / "long.csv"
    total = 100_000
    source.write_text(
        "refund_id,status,merchant_reference\n"
        + "".join(f"NONE-{n},approved,M\n" for n in range(total))
    )
    prefixes, done = set(), 0
    for size in chunk_sizes(CHUNK_ROWS):
        done += size
        if done >= total:
            break
        prefixes.add(done)
    command = [sys.executable, "-m", "bnplctl", "webhooks", "ingest", str(source)]
    ingest = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    with engine.connect() as observer:
        while time.monotonic() < deadline:
            seen = observer.execute(text("SELECT max(rows) FROM ingested_files")).scalar_one()
            observer.rollback()
            if seen:  # the first chunk has committed: kill it outright
                break
            time.sleep(0.005)
    ingest.send_signal(signal.SIGKILL)
    ingest.communicate(timeout=60)

    assert ingest.returncode == -signal.SIGKILL
    (record,) = json.loads(cli("webhooks", "files", "-o", "json").stdout)
    assert record["finished_at"] is None
    assert record["sha256"] is None  # not read to its end: no checksum, never ""
    assert record["rows"] in prefixes  # the rows of the chunks committed, never 0
    assert record["unknown_refund"] == record["rows"]


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [
        # Ctrl-C signals the whole process group, the worker processes included.
        ("SIGINT to the group", 130, "interrupted"),
        # kill, timeout or a service manager signal the main process only: its workers
        # lose their reader and must not print a traceback either.
        ("SIGTERM to the command", 143, "terminated (SIGTERM)"),
        # timeout(1) and `kill -TERM -- -PGID` signal the group: the workers ignore it,
        # and the main process ends them (a worker dying on its own could take the task
        # queue's lock with it, and the pool's terminate() then waited for ever).
        ("SIGTERM to the group", 143, "terminated (SIGTERM)"),
    ],
)
def test_an_import_stopped_by_a_signal_says_so_in_one_line_and_keeps_whole_chunks(
    cli: Cli, engine: Engine, tmp_path: Any, stop: str, code: int, said: str
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 300_000)  # several seconds of work: time to interrupt it
    command = [sys.executable, "-m", "bnplctl", "users", "import", str(source)]
    importing = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # A shell's background jobs ignore SIGINT, and a child inherits that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while row_counts(engine)["users"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the first chunk is in: the workers are busy with the next ones
    if stop == "SIGINT to the group":
        os.killpg(importing.pid, signal.SIGINT)
    elif stop == "SIGTERM to the group":
        os.killpg(importing.pid, signal.SIGTERM)
    else:
        os.kill(importing.pid, signal.SIGTERM)
    stdout, stderr = importing.communicate(timeout=60)

    assert importing.returncode == code, stderr
    counts = row_counts(engine)
    assert stderr.strip() == (
        f"error: {said}: what was committed before stays, the rest was rolled back;"
        f" {counts['users']} row(s) of this run's finished chunks"
        f" stay handled ({counts['users']} created, 0 not); run the file again to finish it"
        " (rows created already come back as duplicate)"
    )
    assert 0 < counts["users"] < 300_000
    assert counts["users"] % 5_000 == 0
    assert counts["audit_events"] == counts["users"]
    assert cli("verify").exit_code == 0  # rule 9 holds after the race


@pytest.mark.parametrize("to_the_group", [True, False], ids=["group", "command"])
def test_an_import_terminated_at_any_moment_ends_in_one_line_without_hanging(
    cli: Cli, engine: Engine, tmp_path: Any, to_the_group: bool
) -> None:
    """SIGTERM at moments spread over an import's start (the pool forking its workers,
    the first chunks in flight, inserts): every run ends at once with the one error line;
    no worker prints a traceback (one run in 20 printed 66 lines of BrokenPipeError),
    none is left behind, and none hangs the pool's shutdown."""
    import os
    import signal
    import subprocess
    import sys

    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 60_000)
    command = [sys.executable, "-m", "bnplctl", "users", "import", str(source)]
    outcomes = []
    for delay in (0.35, 0.45, 0.55, 0.65, 0.8, 1.0, 1.3, 1.7):
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE users, audit_events CASCADE"))
        importing = subprocess.Popen(  # noqa: S603 - our own CLI
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        time.sleep(delay)
        if to_the_group:
            os.killpg(importing.pid, signal.SIGTERM)
        else:
            importing.send_signal(signal.SIGTERM)
        try:
            _, stderr = importing.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(importing.pid, signal.SIGKILL)
            importing.communicate()
            pytest.fail(f"SIGTERM after {delay} s: the import hung")
        outcomes.append((delay, importing.returncode, stderr))
        with pytest.raises(ProcessLookupError):  # no worker outlives the import
            os.killpg(importing.pid, 0)
    for delay, code, stderr in outcomes:
        if code == -signal.SIGTERM:  # before the handler was installed: Python's start
            assert stderr == "", (delay, stderr)
            continue
        assert code in (0, 143), (delay, code, stderr)
        if code == 143:  # one error line, the last; before it at most the import's own
            lines = stderr.splitlines()  # table of created rows (a signal after the work)
            assert [line for line in lines if line.startswith("error:")] == lines[-1:]
            assert lines[-1].startswith("error: terminated (SIGTERM)"), (delay, stderr)
            assert lines[:-1] == [] or lines[0] == "Created rows", (delay, stderr)
            assert "Traceback" not in stderr and "Error" not in stderr, (delay, stderr)
    assert sum(code == 143 for _, code, _ in outcomes) >= 4, outcomes
    assert cli("verify").exit_code == 0  # rule 9 holds after the last one's kept chunks


def test_a_signal_while_the_workers_start_leaves_none_behind(no_database: None) -> None:
    """A SIGTERM that arrives while the workers are forked waits until they all are,
    then stops the import, and every worker is gone: one left running would ignore the
    SIGTERM multiprocessing sends at exit, and the exit would wait for it for ever."""
    import multiprocessing
    import os
    import signal

    from bnplctl.errors import Terminated
    from bnplctl.importing.batch import _Workers

    context = multiprocessing.get_context("fork")

    class SignalledAtEachStart:
        """The fork context, with a SIGTERM to this process as each worker starts."""

        Pipe = staticmethod(context.Pipe)

        @staticmethod
        def Process(**kwargs: Any) -> Any:  # noqa: N802 - the context's own name
            process = context.Process(**kwargs)
            start = process.start

            def start_then_signal() -> None:
                start()
                os.kill(os.getpid(), signal.SIGTERM)

            process.start = start_then_signal  # type: ignore[method-assign]
            return process

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with pytest.raises(Terminated):
            _Workers(abs, 3, context=SignalledAtEachStart())
    finally:
        signal.signal(signal.SIGTERM, previous)
    left = multiprocessing.active_children()
    for process in left:  # so that a failure here does not hang the test run's exit
        process.kill()
        process.join()
    assert left == []


def test_an_import_killed_outright_leaves_no_worker_behind_and_no_pipe_open(
    cli: Cli, engine: Engine, tmp_path: Any
) -> None:
    """kill -9 (an OOM kill, an operator) of the main process: its worker processes must
    not outlive it (they ignore SIGTERM and SIGINT), nor keep the pipeline it writes into
    open: a `bnplctl users import … -o jsonl | reader` must end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 300_000)
    reader = subprocess.Popen(
        ["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
    )
    assert reader.stdin is not None
    importing = subprocess.Popen(
        [sys.executable, "-m", "bnplctl", "users", "import", str(source), "-o", "jsonl"],
        stdout=reader.stdin,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    reader.stdin.close()  # the pipe's write end is the importer's (and its workers') now
    deadline = time.monotonic() + 60
    while row_counts(engine)["users"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = subprocess.run(
        ["pgrep", "-P", str(importing.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children  # the worker processes
    importing.send_signal(signal.SIGKILL)
    importing.wait(timeout=10)
    try:
        reader.wait(timeout=10)  # end of file: no worker holds the pipe
        deadline = time.monotonic() + 10  # the kernel's SIGKILL takes a moment to land
        while time.monotonic() < deadline and not all(
            _is_zombie(pid) for pid in children if os.path.exists(f"/proc/{pid}")
        ):
            time.sleep(0.05)
    finally:
        leftover = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
        for pid in leftover:
            os.kill(int(pid), signal.SIGKILL)
        reader.kill()
    assert leftover == [] or all(_is_zombie(pid) for pid in leftover)
    assert cli("verify").exit_code == 0


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_an_import_whose_output_reader_goes_away_says_what_stays(
    cli: Cli, engine: Engine, tmp_path: Any
) -> None:
    """`bnplctl users import … -o csv | head -1`: the reader leaves after the first line,
    the import stops (141), and stderr, still open, says how many rows its committed
    chunks hold, as for any other stop."""
    import subprocess
    import sys

    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 60_000)
    done = subprocess.run(  # noqa: S602 - a pipeline of our own, fixed text
        f"{sys.executable} -m bnplctl users import {source} -o csv | head -1 > /dev/null",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )
    created = row_counts(engine)["users"]
    lines = done.stderr.strip().splitlines()
    assert created > 0
    assert len(lines) == 1, done.stderr
    assert f"{created} row(s) of this run's finished chunks stay handled" in lines[0]
    assert cli("verify").exit_code == 0


@pytest.mark.parametrize("command", ["users", "payments"])
def test_a_batch_whose_summary_cannot_be_written_says_what_it_did(
    cli: Cli, engine: Engine, tmp_path: Any, command: str
) -> None:
    """Every row handled, then the summary cannot be written (a full disk): 74, and the
    one line says the rows stay handled (re-running finds them as duplicates)."""
    import subprocess
    import sys

    from bench.run import write_users

    if command == "users":
        source = tmp_path / "users.csv"
        write_users(source, 20)
        args = ["users", "import", str(source)]
    else:
        from tests.test_sweep import seed

        seed(engine, 2, __import__("datetime").date(2026, 1, 1))
        source = tmp_path / "payments.csv"
        source.write_text("reference,user_id,amount\nP-1,u-1,10.00\nP-2,u-2,10.00\n")
        args = ["payments", "import", str(source)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "bnplctl", *args, "-o", "json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 74, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the output" in lines[0]
    assert "row(s) of this run's finished chunks stay handled" in lines[0]
