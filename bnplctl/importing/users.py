"""The users import: rows in, per-row outcomes out, one transaction per chunk.

Rows are validated and protected by worker processes (CPU-bound: validation,
encryption, hashing) while this process inserts the prepared chunks in file order
(``services/onboarding.py``'s statement), each chunk a transaction of its own.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import IO, TYPE_CHECKING, Any

from bnplctl.errors import InvalidInput
from bnplctl.importing.batch import IngestReport, Rejected, chunked
from bnplctl.importing.readers import CsvSlice, Format, RawRow, csv_slices, read_rows

if TYPE_CHECKING:
    from bnplctl.context import Context

USER_COLUMNS = ("name", "phone", "passport", "card", "dob")


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk validated and protected: COPY text, the staged keys, the invalid rows, and
    the places (``seq``) of the rows whose user_id was generated."""

    copy_text: str
    keys: list[tuple[int, str, str]]
    invalid: list[Rejected]
    generated: frozenset[int] = frozenset()


RowOutcome = dict[str, Any]


@dataclass
class UserImportReport(IngestReport):
    """A users import's outcomes (the first rows rejected, every one to the rejects
    file), and the users it created: user_id -> file line, in file order (naming the
    line a later duplicate repeats; ``generated``: the ids a dry run made up).
    ``row_outcomes``, when set, is given each committed chunk's rows in file order
    (``line``, ``user_id``, ``outcome``, ``reason``): ``-o jsonl``/``csv`` stream them."""

    outcomes: tuple[str, ...] = ("created", "duplicate", "invalid")
    applied_as: str = "created"
    created: dict[str, int] = field(default_factory=dict)
    generated: set[str] = field(default_factory=set)
    row_outcomes: Callable[[list[RowOutcome]], None] | None = None


def prepare_chunk(rows: list[RawRow], today: date, keyring: Any) -> PreparedChunk:
    """Validate and protect one chunk (pure CPU: runs in a worker process).

    A plainly valid row takes ``quick_user``; any other row, ``UserCreate.parse``, which
    gives its result or the canonical error message.
    """
    from bnplctl.services.onboarding import copy_line, new_user_id, protected_values
    from bnplctl.validators import quick_user, shown_id

    lines: list[str] = []
    keys: list[tuple[int, str, str]] = []
    invalid: list[Rejected] = []
    generated: set[int] = set()
    for row in rows:
        if row.error is not None:
            key = shown_id(row.fields.get("user_id"), row.fields.get("passport"))
            invalid.append(Rejected(row.line, key, "invalid", row.error))
            continue
        parsed = quick_user(row.fields, today)
        if parsed is None:
            from bnplctl.schemas import UserCreate  # pydantic: only for rows not plainly valid

            try:
                user = UserCreate.parse(row.fields, today)
            except InvalidInput as exc:
                key = shown_id(row.fields.get("user_id"), row.fields.get("passport"))
                invalid.append(Rejected(row.line, key, "invalid", exc.message))
                continue
            parsed = (user.user_id, user.name, user.phone, user.passport, user.card, user.dob)
        user_id, name, phone, passport, card, dob = parsed
        if user_id is None:
            generated.add(len(keys))
        values = protected_values(
            user_id or new_user_id(), name, phone, passport, card, dob, keyring
        )
        lines.append(copy_line(len(keys), values))
        keys.append((row.line, values[0], values[4]))
    return PreparedChunk("".join(lines), keys, invalid, frozenset(generated))


_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class _Workers:
    """Worker processes that prepare chunks, each fed through a pipe of its own, in turn:
    a worker's results come back in the order it was given its chunks, so results taken
    in the order the chunks were handed out are in file order.

    Nothing is shared between the processes (no queue, no lock), so a stop at any moment
    ends at once: the workers ignore SIGINT and SIGTERM, even sent to the whole process
    group (a terminal, timeout(1), ``kill -- -PGID``), and this process, which reports
    the stop, kills them (``stop``). A ``multiprocessing.Pool`` could not promise that:
    a worker that died on the group's signal could hold the task queue's lock, or leave
    half a result in the shared result pipe, and ``Pool.terminate()`` then waited for
    ever; one that outlived this process printed a BrokenPipeError traceback. The
    signals wait while the workers are forked (``_signals_held``), so none starts with
    this process's handlers or is left behind by a stop during the forks."""

    def __init__(self, context: Any, count: int, master: bytes) -> None:
        self.links: list[Any] = []
        self.processes: list[Any] = []
        self.handed_out = 0
        try:
            with _signals_held():
                for _ in range(count):
                    mine, theirs = context.Pipe()
                    # The worker closes its copies of this process's ends (of its own pipe
                    # and of the workers' before it): killed outright (-9, an OOM kill),
                    # this process then leaves every worker an end of file.
                    ours = [*self.links, mine]
                    process = context.Process(
                        target=_serve, args=(theirs, master, ours, os.getpid()), daemon=True
                    )
                    self.processes.append(process)
                    process.start()
                    theirs.close()
                    self.links.append(mine)
        except BaseException:  # a signal that came meanwhile is raised as they are let in
            self.__exit__()
            raise

    def submit(self, item: WorkItem, today: date) -> _Pending:
        """Hand ``item`` to the next worker in turn; its result is ``.get()``."""
        link = self.links[self.handed_out % len(self.links)]
        self.handed_out += 1
        link.send((item, today))
        return _Pending(link)

    def stop(self) -> None:
        """Kill the workers and reap them: they hold nothing (no connection, no lock)."""
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                process.kill()
        for process in self.processes:
            if process.pid is not None:
                process.join()
        for link in self.links:
            link.close()

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with _signals_held():  # a signal that comes meanwhile is raised once they are gone
            self.stop()


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then the one that came is raised):
    the workers are never left half made or half stopped. Left running, they would
    ignore the SIGTERM that multiprocessing's exit sends them, and the exit would wait."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@dataclass(frozen=True)
class _Pending:
    link: Any

    def get(self) -> PreparedChunk:
        """The chunk prepared, or what preparing it raised (an unreadable CSV slice)."""
        outcome = self.link.recv()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]


def _serve(link: Any, master_key: bytes, parent_ends: list[Any], parent: int) -> None:
    """A worker: prepares the chunks ``link`` brings, in order, and sends each result
    back. A thread reads ahead, so that this process never blocks the main one's
    ``send``s while it sends a result. Ends quietly when the main process goes away,
    however it goes: it holds none of that process's pipe ends (``parent_ends``) nor its
    standard streams (a pipeline it writes into ends with it), and the kernel kills it
    when that process dies (``_die_with``)."""
    import queue
    import threading

    from bnplctl.crypto import Keyring

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for end in parent_ends:
        end.close()
    quiet = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(quiet, stream)
    os.close(quiet)
    _die_with(parent)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    keyring = Keyring(master_key)
    received: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read_ahead() -> None:
        try:
            while True:
                received.put(link.recv())
        except (EOFError, OSError):
            received.put(None)

    threading.Thread(target=read_ahead, daemon=True).start()
    while (work := received.get()) is not None:
        item, today = work
        try:
            outcome: Any = _prepare(item, today, keyring)
        except Exception as exc:  # re-raised in the main process, as its own
            outcome = exc
        try:
            link.send(outcome)
        except OSError:  # the main process went away
            return


def _die_with(parent: int) -> None:
    """SIGKILL to this process when ``parent`` dies (Linux's ``PR_SET_PDEATHSIG``; a
    no-op elsewhere), and an end at once if it died already."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipes' end of file suffices
        pass
    if os.getppid() != parent:
        os._exit(0)


WorkItem = list[RawRow] | CsvSlice


def user_chunks(stream: IO[bytes], fmt: Format, chunk_rows: int) -> Iterator[WorkItem]:
    """The import's units of work of ``chunk_rows`` rows: raw CSV slices (parsed by the
    workers), or row chunks."""
    if fmt == "csv":
        return csv_slices(stream, chunk_rows)
    return chunked(read_rows(stream, fmt, USER_COLUMNS), chunk_rows)


def _prepare(item: WorkItem, today: date, keyring: Any) -> PreparedChunk:
    rows = list(item.rows(USER_COLUMNS)) if isinstance(item, CsvSlice) else item
    return prepare_chunk(rows, today, keyring)


def import_users(
    items: Iterable[WorkItem],
    *,
    context: Context,
    source: str = "import",
    dry_run: bool = False,
    warn: Callable[[str], None] | None = None,
    report: UserImportReport | None = None,
) -> UserImportReport:
    """Validate, protect and insert users, one transaction per chunk (a dry run: one
    transaction for the whole file, rolled back, so that its outcomes are the real ones).
    The outcomes go to ``report`` (a new one by default), which after an error holds
    those of the chunks inserted before it.

    A single chunk is prepared here. A larger file is prepared by a pool of worker
    processes (validation, encryption and hashing are CPU-bound) while this process
    inserts the chunks in file order; at most a few chunks are in flight, so memory
    stays flat. The workers are started first, on the first chunks, while this process
    loads the database layer and connects (about half a second of a command's start).
    The key is checked against the database (``services/secret_key.py``) in the first chunk's
    transaction, before its insert; without a key file yet, before anything else.
    """
    from bnplctl import crypto

    settings = context.settings
    master = crypto.read_key(settings.required_key_file())
    if master is None:  # the database decides whether one may be generated
        from bnplctl.services.secret_key import checked_key

        with context.db.unit(commit=not dry_run) as work:
            connection = work.connection
            master = checked_key(connection, settings, warn=warn)
        warn = None  # said once
    keyring = crypto.Keyring(master)
    today = context.clock.today()
    report = report if report is not None else UserImportReport()
    chunk_inserter = functools.partial(
        _chunk_inserter, report, context=context, source=source, dry_run=dry_run, master=master
    )
    chunks = iter(items)
    first = next(chunks, None)
    second = next(chunks, None) if first is not None else None
    if second is None:
        with chunk_inserter(warn=warn) as insert:
            if first is not None:
                insert(_prepare(first, today, keyring))
    else:
        import multiprocessing
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        from contextlib import ExitStack

        workers = max(1, min(4, (os.cpu_count() or 2)))
        forking = multiprocessing.get_context("fork")
        # This thread reads and dispatches; one inserter thread writes the chunks in
        # order (psycopg2 releases the GIL while the server works).
        with (
            ExitStack() as stack,  # closes the inserter's connection last
            _Workers(forking, workers, master) as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnpl-insert") as inserter,
        ):
            # The first chunks go to the workers before this process loads the database
            # layer and connects (in _chunk_inserter), so the two overlap.
            started = [chunk for chunk in (first, second) if chunk is not None]
            ahead = itertools.chain(started, itertools.islice(chunks, 3 * workers - 2))
            in_flight: deque[Any] = deque(pool.submit(chunk, today) for chunk in ahead)
            insert = stack.enter_context(chunk_inserter(warn=warn))
            inserts: deque[Any] = deque()

            def hand_over(keep: int) -> None:
                """Insert prepared chunks in file order until at most ``keep`` are still
                being prepared; at most two inserts wait their turn."""
                while len(in_flight) > keep:
                    inserts.append(inserter.submit(insert, in_flight.popleft().get()))
                    while len(inserts) > 2:
                        inserts.popleft().result()

            hand_over(workers)
            for chunk in chunks:
                in_flight.append(pool.submit(chunk, today))
                hand_over(workers)
            hand_over(0)
            while inserts:
                inserts.popleft().result()
    return report


@contextmanager
def _chunk_inserter(
    report: UserImportReport,
    *,
    context: Context,
    source: str,
    master: bytes,
    dry_run: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Callable[[PreparedChunk], None]]:
    """Connects (and checks the schema: before any row is written) and yields the
    function that inserts one prepared chunk, in a unit of work of its own
    (``db.units``), and records its outcomes. The first chunk's unit checks ``master``
    against the database's key check before it inserts."""
    from bnplctl.services.onboarding import insert_staged
    from bnplctl.services.secret_key import checked_key, mismatch

    settings = context.settings
    expect_new = True  # until a chunk meets a duplicate
    key_checked = False
    with context.db.units(dry_run=dry_run) as next_unit:

        def insert(prepared: PreparedChunk) -> None:
            nonlocal expect_new, key_checked
            with next_unit() as work:
                if not key_checked:
                    if checked_key(work.connection, settings, warn=warn) != master:
                        raise mismatch(settings.required_key_file())  # changed meanwhile
                    key_checked = True
                duplicates = insert_staged(
                    work.connection,
                    prepared.copy_text,
                    prepared.keys,
                    now=context.clock.now(),
                    actor=context.acting,
                    source=source,
                    expect_new=expect_new,
                )
            expect_new = not duplicates
            _record(report, prepared, duplicates, dry_run=dry_run)  # once committed

        yield insert


def _record(
    report: UserImportReport, prepared: PreparedChunk, duplicates: list[Any], *, dry_run: bool
) -> None:
    """A committed chunk's outcomes: its created users (in file order), its invalid rows
    and its duplicates, each naming what it duplicates: an earlier line of this run when
    that line created the user, else the stored user. A generated id is never a
    duplicate's key (it names nothing the operator knows)."""
    from bnplctl.services.onboarding import duplicate_reason

    refused = {outcome.seq for outcome in duplicates}
    created: list[tuple[int, str]] = []
    for seq, (line, user_id, _) in enumerate(prepared.keys):
        if seq not in refused:
            report.created[user_id] = line
            created.append((line, user_id))
            if dry_run and seq in prepared.generated:
                report.generated.add(user_id)
    not_applied = list(prepared.invalid)
    for outcome in duplicates:
        earlier = report.created.get(outcome.duplicate_of) if outcome.duplicate_of else None
        reason = duplicate_reason(
            outcome.same or "passport", user_id=outcome.duplicate_of, line=earlier
        )
        key = "" if outcome.seq in prepared.generated else outcome.user_id
        not_applied.append(Rejected(outcome.line, key, "duplicate", reason))
    not_applied.sort(key=lambda item: item.line)
    report.add_chunk(len(created), not_applied)
    if report.row_outcomes is not None:
        rows: list[RowOutcome] = [
            {"line": line, "user_id": None if user_id in report.generated else user_id,
             "outcome": "created", "reason": ""}
            for line, user_id in created
        ]  # fmt: skip
        rows += [
            {"line": item.line, "user_id": item.key, "outcome": item.outcome,
             "reason": item.reason}
            for item in not_applied
        ]  # fmt: skip
        rows.sort(key=lambda row: row["line"])
        report.row_outcomes(rows)
