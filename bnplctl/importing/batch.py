"""What every batch file shares: per-row outcomes and their report, the rejects file, and
chunks read ahead of the database.

Valid rows are applied even when others are rejected; rejected rows are kept
(line, key, outcome, reason — never a raw personal value) for the report and
the ``--rejects`` file.
"""

from __future__ import annotations

import csv
import itertools
import os
import queue
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from bnplctl.errors import OutputError
from bnplctl.tuning import quick_thread_switches

if TYPE_CHECKING:
    from bnplctl.db import Database
    from bnplctl.importing.readers import Format, HashingReader

T = TypeVar("T")
S = TypeVar("S")  # a chunk staged (``apply_chunks``)
R = TypeVar("R")  # a chunk applied


@dataclass(frozen=True)
class Rejected:
    line: int
    key: str
    outcome: str
    reason: str
    file_index: int = 0  # which of a command's input files (webhooks ingest takes several)


def read_ahead(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    Parsing the next chunk (Python) overlaps applying this one (the database). An
    exception in the producer is raised to the consumer in its place in the sequence;
    when the consumer stops early, the producer stops at its next item.
    """
    pending: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                pending.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            offer((False, exc))
            return
        offer((False, None))

    producer = threading.Thread(target=produce, name="bnplctl-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            more, value = pending.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        producer.join(timeout=5)


@dataclass(frozen=True)
class ParsedChunk:
    """One chunk of a file, parsed: its valid rows as CSV for COPY (each led by its place
    in the chunk, ``seq``), and the rows settled while parsing (``invalid``: the rows
    that fail validation; in a settlement report also those in another currency and
    those skipped)."""

    copy_data: str
    valid: int
    invalid: list[Rejected]


def parse_chunk(
    chunk: list[Any], parse: Callable[[Any], Sequence[object]], key_field: str
) -> ParsedChunk:
    """Each raw row of ``chunk`` through ``parse`` (its COPY columns after ``seq``, or
    ``InvalidInput``); a refused row is reported by its ``key_field``, printable."""
    import csv as csv_module
    import io

    from bnplctl.errors import InvalidInput
    from bnplctl.validators import printable

    buffer = io.StringIO()
    writer = csv_module.writer(buffer)
    valid = 0
    invalid: list[Rejected] = []
    for row in chunk:
        try:
            values = parse(row)
        except InvalidInput as exc:
            key = printable(str(row.fields.get(key_field) or "")[:100])
            invalid.append(Rejected(row.line, key, "invalid", exc.message))
            continue
        writer.writerow((valid, *values))
        valid += 1
    return ParsedChunk(buffer.getvalue(), valid, invalid)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in chunks of ``size``."""
    return _in_chunks(items, itertools.repeat(size))


def chunk_sizes(size: int) -> Iterator[int]:
    """A batch file's chunk sizes for ``apply_chunks``: ``size`` rows, after a fifth and a
    half of it. Nothing is applied before the first chunk is parsed and staged, so a
    smaller first chunk starts the pipeline sooner; each later one is staged while the
    one before is applied. (A size below 100, as tests set, is kept from the first.)"""
    if size >= 100:
        yield size // 5
        yield size // 2
    yield from itertools.repeat(size)


def ramped_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in chunks of ``chunk_sizes(size)``."""
    return _in_chunks(items, chunk_sizes(size))


def _in_chunks(items: Iterable[T], sizes: Iterable[int]) -> Iterator[list[T]]:
    iterator = iter(items)
    for size in sizes:
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk


# --- the chunks of a batch file, applied in order ---------------------------------------


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside wait until the block ends, then act as they
    would have. A chunk's commit and the counting of its rows (what the summary, the
    note after an error and the rejects file report) must not be cut apart. Only the
    main thread can hold them; elsewhere this does nothing."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[signal.Signals] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signal.Signals(signum))

    previous = {number: signal.signal(number, hold) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def apply_chunks(
    database: Database,
    chunks: Iterable[Any],
    stage: Callable[[Any, Any], S],
    apply: Callable[[Any, S], R],
    committed: Callable[[R], None],
    *,
    dry_run: bool,
    prepare: Callable[[Any], Any] | None = None,
    processes: int | None = None,
    epilogue: Callable[[], Any | None] | None = None,
) -> None:
    """Each chunk of a batch file (read ahead on a thread of its own) in a transaction of
    its own, committed in file order: ``stage(connection, chunk)`` parses it, copies it
    in and classifies what needs no lock; ``apply(connection, staged)`` takes the chunk's
    locks and applies it; ``committed(result)`` runs once the transaction has committed.
    While one chunk is applied, the next one is staged on a second connection, so the
    server works on both at once; only the applying chunk holds locks, and a chunk takes
    them once the one before has committed: what is committed is always a prefix of the
    file. A fault of the file (a line that cannot be read) is raised in its place: the
    chunks before it are still applied.

    ``prepare``, the stage option of CPU-bound work (a users chunk's validation,
    encryption and hashing), runs on each chunk before ``stage`` (which gets what it
    returns) in ``processes`` worker processes (``_Workers``), so that the chunks after
    the one being applied are prepared meanwhile, on every core; its results come back
    in file order, and what it raises is raised in its chunk's place. A file of one
    chunk is prepared in this process: no worker is started for it.

    ``epilogue``, once every chunk has been applied (and committed), may give one more
    chunk, staged and applied as the others (prepared in this process): what the file's
    own chunks put off until every one of them was applied (a payments file's reversals
    whose payment came later in the file).

    A dry run stages and applies every chunk in one transaction, rolled back at the end.
    The chunks' units are ``database``'s bare ones (``Database.units(raw=True)``): stage
    and apply get the psycopg2 connection.
    """
    with ExitStack() as stack:
        prepared, workers = _prepared(stack, iter(chunks), prepare, processes)
        # Prepared by workers, a result waits in its worker (a pipe's worth ahead) rather
        # than here: one is enough for the reader to hold.
        ready = read_ahead(prepared, depth=1 if workers is not None else 2)
        if workers is None:
            stack.callback(ready.close)
        else:  # on the way out, killed first, then the reader waiting on them ends
            workers.reader = ready
        if not dry_run:
            _apply_pipelined(database, ready, stage, apply, committed)
            last = epilogue() if epilogue is not None else None
            if last is not None:
                with _left_whole(database.units(raw=True)) as next_unit:
                    with next_unit() as work:
                        result = apply(work.dbapi, stage(work.dbapi, _prepared_one(prepare, last)))
                    committed(result)
            return
        with _left_whole(database.units(dry_run=True, raw=True)) as next_unit:
            for chunk in ready:
                with next_unit() as work:
                    result = apply(work.dbapi, stage(work.dbapi, chunk))
                committed(result)
            last = epilogue() if epilogue is not None else None
            if last is not None:
                with next_unit() as work:
                    result = apply(work.dbapi, stage(work.dbapi, _prepared_one(prepare, last)))
                committed(result)


def _prepared_one(prepare: Callable[[Any], Any] | None, chunk: Any) -> Any:
    return prepare(chunk) if prepare is not None else chunk


def prepare_processes() -> int:
    """How many worker processes prepare chunks by default: one a core, up to four."""
    return max(1, min(4, os.cpu_count() or 2))


def _prepared(
    stack: ExitStack,
    chunks: Iterator[Any],
    prepare: Callable[[Any], Any] | None,
    processes: int | None,
) -> tuple[Iterator[Any], _Workers | None]:
    """``chunks`` through ``prepare``: here for a file of one chunk, else by worker
    processes (returned too), started now, on the first chunks (they work while this
    process connects), and stopped when ``stack`` closes."""
    if prepare is None:
        return chunks, None
    head, rest = _peek(chunks, 2)
    if len(head) < 2:
        return map(prepare, itertools.chain(head, rest)), None
    workers = stack.enter_context(_Workers(prepare, processes or prepare_processes()))
    results = _InOrder(workers, itertools.chain(head, rest), ahead=len(workers.links) + 1)
    results.fill()
    return results, workers


def _peek(chunks: Iterator[T], count: int) -> tuple[list[T], Iterator[T]]:
    """The first ``count`` chunks, read now, and the ones after them; a fault of the file
    met meanwhile is raised by the second in its place."""
    head: list[T] = []
    try:
        for chunk in chunks:
            head.append(chunk)
            if len(head) == count:
                break
    except Exception as exc:
        return head, _raising(exc)
    return head, chunks


def _raising(exc: Exception) -> Iterator[Any]:
    raise exc
    yield  # a generator: raises when first asked


@contextmanager
def _left_whole(manager: AbstractContextManager[T]) -> Iterator[T]:
    """``manager`` (a series of units on one connection), left after its work with
    SIGINT and SIGTERM held (``signals_held``): a signal that cut the connection's return
    to the pool (its rollback) would make SQLAlchemy log a traceback on stderr beside the
    one error line; held, it stops the command once the connection is back. Left on an
    error, nothing is held: a connection that hangs can still be interrupted."""
    value = manager.__enter__()
    try:
        yield value
    except BaseException as exc:
        if not manager.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        with signals_held():
            manager.__exit__(None, None, None)


@dataclass(frozen=True)
class _Staging(Generic[S]):
    """A chunk staged ahead: its open unit of work (entered and left on the applying
    thread) and the stager's work on its connection."""

    unit: ExitStack
    connection: Any
    staged: Future[S]


def _apply_pipelined(
    database: Database,
    chunks: Iterator[Any],
    stage: Callable[[Any, Any], S],
    apply: Callable[[Any, S], R],
    committed: Callable[[R], None],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from bnplctl.db import translate_db_errors

    with ExitStack() as stack:
        # A second for a second chunk.
        series = [stack.enter_context(_left_whole(database.units(raw=True)))]
        stager = stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnpl-stage")
        )
        stack.enter_context(quick_thread_switches())

        def stage_ahead(number: int, chunk: Any) -> _Staging[S]:
            if len(series) == number % 2:
                series.append(stack.enter_context(_left_whole(database.units(raw=True))))
            unit = ExitStack()
            connection = unit.enter_context(series[number % 2]()).dbapi
            return _Staging(unit, connection, stager.submit(stage, connection, chunk))

        def finish(staging: _Staging[S]) -> None:
            with ExitStack() as held:
                with staging.unit:  # commits here, or rolls back on an error
                    try:
                        with translate_db_errors():
                            staged = staging.staged.result()
                    except BaseException:  # a stop while it waited: the stager goes on
                        _settle(staging)
                        raise
                    result = apply(staging.connection, staged)
                    held.enter_context(signals_held())  # from the commit to its count
                committed(result)

        ahead: _Staging[S] | None = None
        try:
            for number in itertools.count():
                failure: Exception | None = None
                try:
                    chunk = next(chunks, None)
                except Exception as exc:  # a fault of the file, in its place in the file:
                    chunk, failure = None, exc  # the chunks before it are still applied
                applying, ahead = ahead, (stage_ahead(number, chunk) if chunk is not None else None)
                if applying is not None:
                    finish(applying)
                if failure is not None:
                    raise failure
                if chunk is None:
                    return
        except BaseException as exc:
            if ahead is not None:  # the chunk staged ahead: let it finish, then roll it back
                _settle(ahead)
                ahead.unit.__exit__(type(exc), exc, exc.__traceback__)
            raise


def _settle(staging: _Staging[Any]) -> None:
    """Wait until the stager is done with a chunk's connection, before its unit rolls back
    (a connection serves one thread at a time: a rollback sent while the stager's COPY
    runs on it leaves the connection, and the command, waiting for ever). Its statement,
    if one runs, is cancelled on the server, so the wait is short; a second signal waits
    for its end too."""
    from concurrent.futures import wait

    from bnplctl.db import dbapi_connection

    if not staging.staged.done():
        try:
            dbapi_connection(staging.connection).cancel()  # PQcancel: from any thread
        except Exception:  # noqa: S110 - a connection already gone: nothing runs on it
            pass
    with signals_held():
        wait([staging.staged])


# --- the stage option: chunks prepared by worker processes ---------------------------


class _Workers:
    """Worker processes that run a pipeline's ``prepare`` on chunks, each fed through a
    pipe of its own, in turn: a worker's results come back in the order it was given its
    chunks, so results taken in the order the chunks were handed out are in file order.

    Nothing is shared between the processes (no queue, no lock), so a stop at any moment
    ends at once: the workers ignore SIGINT and SIGTERM, even sent to the whole process
    group (a terminal, timeout(1), ``kill -- -PGID``), and this process, which reports
    the stop, kills them (``__exit__``). A ``multiprocessing.Pool`` could not promise
    that: a worker that died on the group's signal could hold the task queue's lock, or
    leave half a result in the shared result pipe, and ``Pool.terminate()`` then waited
    for ever; one that outlived this process printed a BrokenPipeError traceback.

    Forked, not spawned: a worker starts at once with ``prepare`` and what it holds (the
    keyring of a users import: passed, never a global) and nothing to import. The forks
    are made by the main thread (the kernel's death signal of ``_die_with`` follows the
    thread that forked) before the pipeline starts a thread of its own (a lock another
    thread held at the fork would stay locked in the child) and before it connects; a
    worker forked later in a command (its second file, a dry run's one connection)
    inherits the process's database sockets, but never touches them and never ends
    through Python's finalisation (it is killed, or ``os._exit``s as multiprocessing's
    workers do), so it never closes a connection on the server. The signals wait while
    the workers are forked (``signals_held``), so none is left behind by a stop during
    the forks (one left running would ignore the SIGTERM that multiprocessing's exit
    sends it, and the exit would wait for it for ever); one that reaches a child before
    it ignores them finds the holding handler, which only records it."""

    def __init__(self, prepare: Callable[[Any], Any], count: int, context: Any = None) -> None:
        import multiprocessing

        context = context or multiprocessing.get_context("fork")
        self.links: list[Any] = []
        self.processes: list[Any] = []
        self.handed_out = 0
        self.reader: Iterator[Any] | None = None  # what waits on the pipes (``read_ahead``)
        try:
            with signals_held():
                for _ in range(count):
                    mine, theirs = context.Pipe()
                    # The worker closes its copies of this process's ends (of its own pipe
                    # and of the workers' before it): killed outright (-9, an OOM kill),
                    # this process then leaves every worker an end of file.
                    ours = [*self.links, mine]
                    process = context.Process(
                        target=_serve, args=(theirs, prepare, ours, os.getpid()), daemon=True
                    )
                    self.processes.append(process)
                    process.start()
                    theirs.close()
                    self.links.append(mine)
        except BaseException:  # a signal that came meanwhile is raised once they are gone
            self.__exit__()
            raise

    def submit(self, chunk: Any) -> _Pending:
        """Hand ``chunk`` to the next worker in turn; its result is ``.get()``."""
        link = self.links[self.handed_out % len(self.links)]
        self.handed_out += 1
        link.send(chunk)
        return _Pending(link)

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Kill the workers and reap them (they hold nothing: no connection, no lock); a
        signal that comes meanwhile is raised once they are gone. Then the ``reader``
        (a thread waiting on the pipes meets an end of file, and ends), then the pipes."""
        try:
            with signals_held():
                for process in self.processes:
                    if process.pid is not None and process.exitcode is None:
                        process.kill()
                for process in self.processes:
                    if process.pid is not None:
                        process.join()
        finally:
            close = getattr(self.reader, "close", None)
            if close is not None:
                close()
            for link in self.links:
                link.close()


@dataclass(frozen=True)
class _Pending:
    link: Any

    def get(self) -> Any:
        """The chunk prepared, or what preparing it raised (an unreadable CSV slice)."""
        outcome = self.link.recv()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _InOrder:
    """The chunks prepared by ``workers``, in file order, with up to ``ahead`` chunks
    handed out at a time (memory stays flat). A fault met reading the chunks comes
    after the chunks handed out before it, in its place."""

    def __init__(self, workers: _Workers, chunks: Iterator[Any], ahead: int) -> None:
        self.workers = workers
        self.chunks: Iterator[Any] | None = chunks
        self.ahead = ahead
        self.in_flight: deque[_Pending] = deque()
        self.fault: Exception | None = None

    def fill(self) -> None:
        """Hand out chunks until ``ahead`` are with the workers (or the file ends)."""
        while self.chunks is not None and len(self.in_flight) < self.ahead:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.chunks = None
            except Exception as exc:
                self.chunks, self.fault = None, exc
            else:
                self.in_flight.append(self.workers.submit(chunk))

    def __iter__(self) -> _InOrder:
        return self

    def __next__(self) -> Any:
        self.fill()
        if self.in_flight:
            return self.in_flight.popleft().get()
        if self.fault is not None:
            fault, self.fault = self.fault, None
            raise fault
        raise StopIteration


def _serve(link: Any, prepare: Callable[[Any], Any], parent_ends: list[Any], parent: int) -> None:
    """A worker: runs ``prepare`` on the chunks ``link`` brings, in order, and sends each
    result back. A thread reads ahead, so that this process never blocks the main one's
    ``send``s while it sends a result. Ends quietly when the main process goes away,
    however it goes: it holds none of that process's pipe ends (``parent_ends``) nor its
    standard streams (a pipeline it writes into ends with it), and the kernel kills it
    when that process dies (``_die_with``)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for end in parent_ends:
        end.close()
    quiet = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(quiet, stream)
    os.close(quiet)
    _die_with(parent)
    received: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def receive() -> None:
        try:
            while True:
                received.put((link.recv(),))
        except (EOFError, OSError):
            received.put(None)

    threading.Thread(target=receive, daemon=True).start()
    while (work := received.get()) is not None:
        try:
            outcome: Any = prepare(work[0])
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
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipes' end of file suffices
        pass
    if os.getppid() != parent:
        os._exit(0)


def ingest_each(
    sources: list[tuple[str, int | None]],
    input_format: str,
    report: IngestReport,
    *,
    database: Database,
    read: Callable[[IO[bytes], Format], Iterable[T]],
    dry_run: bool,
    progress: Callable[[int | None, str], Any],
    one_file: Callable[[str, Iterable[T], HashingReader], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The files of a batch command (users, webhook and payment files): each (name, size
    for a progress bar or None) in turn, read by ``read(stream, format)`` (its rows, or
    its chunks: the users import's), through ``one_file(name, what was read, reader)``;
    returns their summaries. The report knows which file its rows come from (``file``,
    ``file_index``). A dry run's files see each other, as the real run's do
    (``Database.dry_run_scope``). ``progress(size, name)`` is a context manager yielding a byte
    counter or None. The database layer is loaded only once a file needs it, so that a
    users import's workers start on the first chunks meanwhile."""
    from bnplctl.importing.readers import HashingReader, detect_format, faults_named, open_input

    files: list[dict[str, Any]] = []
    with ExitStack() as scope:
        if dry_run:
            scope.enter_context(database.dry_run_scope(raw=True))
        for index, (name, size) in enumerate(sources):
            report.file, report.file_index = name, index
            with faults_named(name), open_input(name) as raw, progress(size, name) as advance:
                reader = HashingReader(raw, on_bytes=advance)
                stream = reader.buffered()
                fmt = detect_format(name, stream, input_format)
                files.append(one_file(name, read(stream, fmt), reader))
    return files


def same_file(path: Path, source: str) -> bool:
    """Whether ``path`` is the input ``source`` (links and ``.``/``..`` resolved; for
    ``-``, whether it is what standard input reads, e.g. ``/dev/stdin``)."""
    if source == "-":
        try:
            target, stdin = os.stat(path), os.fstat(sys.stdin.fileno())
        except (OSError, ValueError, AttributeError):  # no stdin, or a test's stand-in
            return False
        return (target.st_dev, target.st_ino) == (stdin.st_dev, stdin.st_ino)
    candidate = Path(source)
    try:
        if path.resolve() == candidate.resolve():
            return True
        return path.exists() and candidate.exists() and path.samefile(candidate)
    except (OSError, RuntimeError):  # a link loop (RuntimeError on Python 3.11)
        return False


# The first rows not applied kept for the report (-o json carries them); the rest go to
# --rejects.
SHOWN_REJECTS = 1000
# Outcomes of rows handled that are no rejection (a payments file's reversal applied, a
# settlement report's fee or payout skipped): counted, never shown or written as rejected
# rows, never a reason for exit 5.
NOT_REJECTED = frozenset({"reversed", "skipped"})


@dataclass
class IngestReport:
    """A batch file command's report (users, webhook and payment files): counts per
    outcome, the first rows not applied (``shown``), every one streamed to the rejects
    file as its chunk is committed: memory stays flat however many rows are rejected.
    Rows of the ``NOT_REJECTED`` outcomes are counted only; the first skipped ones are
    kept apart (``skipped``: their ``key`` is the processor's row type)."""

    outcomes: tuple[str, ...]  # the outcomes a row of this kind of file can have
    counts: Counter[str] = field(default_factory=Counter)
    shown: list[Rejected] = field(default_factory=list)
    skipped: list[Rejected] = field(default_factory=list)
    rejected_total: int = 0
    sink: RejectsFile | None = None
    file: str = "-"  # the file being ingested, for the rejects file
    file_index: int = 0  # its place among the command's files, for the report
    applied_as: str = "applied"  # the outcome of a row applied (users: ``created``)

    def add_chunk(self, applied: int, not_applied: list[Rejected]) -> None:
        """A committed chunk: every row counted first (the counts stay true if the
        rejects file then fails), then the rows not applied kept and written out."""
        self.counts[self.applied_as] += applied
        self.counts.update(item.outcome for item in not_applied)
        for item in not_applied:
            if item.outcome in NOT_REJECTED:
                if item.outcome == "skipped" and len(self.skipped) < SHOWN_REJECTS:
                    self.skipped.append(replace(item, file_index=self.file_index))
                continue
            self.rejected_total += 1
            if len(self.shown) < SHOWN_REJECTS:
                self.shown.append(replace(item, file_index=self.file_index))
            if self.sink is not None:
                self.sink.write(self.file, item)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def applied(self) -> int:
        return self.counts.get(self.applied_as, 0)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows} | {name: self.counts.get(name, 0) for name in self.outcomes}


class RejectsFile:
    """The ``--rejects`` CSV: ``file``, ``line``, the row's key, ``outcome``, ``reason``.

    Rows go to a temporary file beside the target (the file a link names), renamed into
    place when the command ends (``close``), so an existing file is never truncated
    before the run has something to put there; one of the process's own descriptors
    (``/dev/stderr``), a pipe or a device is written straight through
    (``bnplctl.outfile``). A target that is one of the inputs, ``-`` or an empty name is
    a usage error (exit 2), found before anything is read or written; one that cannot
    be written (at the start, or midway: a full disk, a closed pipe), exit 74, and the
    target stays as it was. Cells a spreadsheet would run as formulas are neutralised.
    """

    def __init__(self, name: str | Path, key_name: str, sources: Iterable[str]) -> None:
        from bnplctl.errors import UsageProblem
        from bnplctl.outfile import OutputFile

        if str(name) in ("", "-"):
            raise UsageProblem(
                "--rejects needs a file name (/dev/stdout writes to standard output)"
            )
        path = Path(name)
        for source in sources:
            if same_file(path, source):
                raise UsageProblem(f"--rejects {path} is an input file; choose another path")
        self.path = path
        self.broken = False
        try:
            self.output = OutputFile(str(name), suffix=".part", newline="", option="--rejects")
        except OSError as exc:
            raise self._cannot_write(exc) from None
        self.writer = csv.writer(self.output.handle)
        self.written = 0
        self._write(["file", "line", key_name, "outcome", "reason"])

    def write(self, file: str, row: Rejected) -> None:
        from bnplctl.validators import printable, spreadsheet_safe

        self.written += 1
        self._write(
            [spreadsheet_safe(printable(file)), row.line, spreadsheet_safe(row.key),
             row.outcome, spreadsheet_safe(printable(row.reason))]
        )  # fmt: skip

    def _write(self, cells: list[Any]) -> None:
        try:
            self.writer.writerow(cells)
        except OSError as exc:
            self.broken = True
            self.output.abandon()
            raise self._cannot_write(exc) from None

    def _cannot_write(self, exc: OSError) -> OutputError:
        why = exc.strerror or type(exc).__name__
        return OutputError(f"{self.path}: cannot write the rejects file ({why})")

    def discard(self) -> None:
        """Leave the target as it was (a run that has nothing to report)."""
        self.output.abandon()

    def finish(self, failed: bool) -> None:
        """At the command's end: put the file in place, or, when the run failed before it
        rejected anything, leave the target as it was."""
        if self.broken:
            return
        if failed and not self.written:
            self.discard()
        else:
            self.close()

    def close(self) -> None:
        """Put the file in place (what was rejected so far, also after a failure)."""
        if self.broken:
            return
        try:
            self.output.put_in_place()
        except OSError as exc:
            self.broken = True
            raise self._cannot_write(exc) from None
