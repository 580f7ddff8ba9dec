"""The users import: rows in, per-row outcomes out, one transaction per chunk.

Rows are validated and protected by worker processes (CPU-bound: validation,
encryption, hashing) while this process inserts the prepared chunks in file order
(``services/onboarding.py``'s statement), each chunk a transaction of its own.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

from bnplctl.errors import InvalidInput
from bnplctl.importing.batch import BatchReport, Rejected, chunked
from bnplctl.importing.readers import CsvSlice, Format, RawRow, csv_slices, read_rows

CHUNK_ROWS = 5000
USER_OUTCOMES = ("created", "duplicate", "invalid")
USER_COLUMNS = ("name", "phone", "passport", "card", "dob")


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk validated and protected: COPY text, the staged keys, the invalid rows, and
    the places (``seq``) of the rows whose user_id was generated."""

    copy_text: str
    keys: list[tuple[int, str, str]]
    invalid: list[Rejected]
    generated: frozenset[int] = frozenset()


@dataclass
class UserImportReport(BatchReport):
    """A users import's outcomes, and the users it created: user_id -> file line, in file
    order (``generated``: the ids made up for rows without one)."""

    created: dict[str, int] = field(default_factory=dict)
    generated: set[str] = field(default_factory=set)


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


_WORKER_KEYRING: Any = None


def _init_worker(master_key: bytes) -> None:
    global _WORKER_KEYRING
    import signal

    from bnplctl.pii import Keyring

    # Ctrl-C reaches the whole process group: the main process stops the import and
    # terminates the pool; a worker printing its own KeyboardInterrupt traceback would
    # break the one-line rule.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # And SIGTERM ends a worker at once (the pool's own way to stop it), not through the
    # main process's handler it inherited.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER_KEYRING = Keyring(master_key)


WorkItem = list[RawRow] | CsvSlice


def user_chunks(stream: IO[bytes], fmt: Format) -> Iterator[WorkItem]:
    """The import's units of work: raw CSV slices (parsed by the workers), or row chunks."""
    if fmt == "csv":
        return csv_slices(stream, CHUNK_ROWS)
    return chunked(read_rows(stream, fmt, USER_COLUMNS), CHUNK_ROWS)


def _prepare(item: WorkItem, today: date, keyring: Any) -> PreparedChunk:
    rows = list(item.rows(USER_COLUMNS)) if isinstance(item, CsvSlice) else item
    return prepare_chunk(rows, today, keyring)


def _prepare_in_worker(item: WorkItem, today: date) -> PreparedChunk:
    return _prepare(item, today, _WORKER_KEYRING)


def import_users(
    items: Iterable[WorkItem],
    *,
    actor: str,
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
    The key is checked against the database (``services/keys.py``) in the first chunk's
    transaction, before its insert; without a key file yet, before anything else.
    """
    from bnplctl import pii
    from bnplctl.clock import business_today
    from bnplctl.config import get_settings

    master = pii.read_key(get_settings().required_key_file())
    if master is None:  # the database decides whether one may be generated
        from bnplctl.db import connection_scope
        from bnplctl.services.keys import checked_key

        with connection_scope(commit=not dry_run) as connection:
            master = checked_key(connection, warn=warn)
        warn = None  # said once
    keyring = pii.Keyring(master)
    today = business_today()
    report = report if report is not None else UserImportReport(USER_OUTCOMES)
    chunk_inserter = functools.partial(
        _chunk_inserter, report, actor=actor, source=source, dry_run=dry_run, master=master
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
        context = multiprocessing.get_context("fork")
        # This thread reads and dispatches; one inserter thread writes the chunks in
        # order (psycopg2 releases the GIL while the server works).
        with (
            ExitStack() as stack,  # closes the inserter's connection last
            context.Pool(workers, initializer=_init_worker, initargs=(master,)) as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnpl-insert") as inserter,
        ):
            # The first chunks go to the workers before this process loads the database
            # layer and connects (in _chunk_inserter), so the two overlap.
            ahead = itertools.chain((first, second), itertools.islice(chunks, 3 * workers - 2))
            in_flight: deque[Any] = deque(
                pool.apply_async(_prepare_in_worker, (chunk, today)) for chunk in ahead
            )
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
                in_flight.append(pool.apply_async(_prepare_in_worker, (chunk, today)))
                hand_over(workers)
            hand_over(0)
            while inserts:
                inserts.popleft().result()
    report.rejected.sort(key=lambda item: item.line)
    return report


@contextmanager
def _chunk_inserter(
    report: UserImportReport,
    *,
    actor: str,
    source: str,
    master: bytes,
    dry_run: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Callable[[PreparedChunk], None]]:
    """Connects (and checks the schema: before any row is written) and yields the
    function that inserts one prepared chunk, in a unit of work of its own
    (``db.chunk_transactions``), and records its outcomes. The first chunk's unit
    checks ``master`` against the database's key check before it inserts."""
    from bnplctl.db import chunk_transactions
    from bnplctl.services.keys import checked_key, mismatch
    from bnplctl.services.onboarding import insert_staged

    expect_new = True  # until a chunk meets a duplicate
    key_checked = False
    with chunk_transactions(dry_run=dry_run) as chunk:

        def insert(prepared: PreparedChunk) -> None:
            nonlocal expect_new, key_checked
            with chunk() as connection:
                if not key_checked:
                    if checked_key(connection, warn=warn) != master:  # changed meanwhile
                        raise mismatch()
                    key_checked = True
                duplicates = insert_staged(
                    connection.connection.driver_connection,
                    prepared.copy_text,
                    prepared.keys,
                    actor=actor,
                    source=source,
                    expect_new=expect_new,
                )
            expect_new = not duplicates
            for rejected in prepared.invalid:  # counted once their chunk is committed
                report.add("invalid", rejected)
            _record(report, prepared, duplicates, dry_run=dry_run)

        yield insert


def _record(
    report: UserImportReport, prepared: PreparedChunk, duplicates: list[Any], *, dry_run: bool
) -> None:
    """A chunk's outcomes: its created users (in file order) and its duplicates, each
    naming what it duplicates: an earlier line of this run when that line created the
    user, else the stored user. A generated id is never a duplicate's key (it names
    nothing the operator knows)."""
    from bnplctl.services.onboarding import duplicate_reason

    refused = {outcome.seq for outcome in duplicates}
    for seq, (line, user_id, _) in enumerate(prepared.keys):
        if seq not in refused:
            report.created[user_id] = line
            if dry_run and seq in prepared.generated:
                report.generated.add(user_id)
    report.counts["created"] += len(prepared.keys) - len(duplicates)
    for outcome in duplicates:
        earlier = report.created.get(outcome.duplicate_of) if outcome.duplicate_of else None
        reason = duplicate_reason(
            outcome.same or "passport", user_id=outcome.duplicate_of, line=earlier
        )
        key = "" if outcome.seq in prepared.generated else outcome.user_id
        report.add("duplicate", Rejected(outcome.line, key, "duplicate", reason))
