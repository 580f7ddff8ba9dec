"""The one pipeline of every batch file command (``importing/batch.apply_chunks``): its
stage option that prepares chunks in worker processes (the users import's validation
and encryption), in file order."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from bnplctl.context import Context
from bnplctl.errors import InvalidInput
from bnplctl.importing.batch import apply_chunks
from bnplctl.sql import run


def _pid_and_double(chunk: list[int]) -> tuple[int, list[int]]:
    if chunk == [-1]:
        raise InvalidInput("line 99: a chunk its worker cannot read")
    return os.getpid(), [n * 2 for n in chunk]


Committed = list[tuple[int, list[int]]]


def _run(
    chunks: Iterator[list[int]] | list[list[int]],
    *,
    dry_run: bool = False,
    processes: int = 3,
    committed: Committed | None = None,
) -> Committed:
    """``chunks`` through the pipeline with ``_pid_and_double`` as its preparation; what
    was committed, in order (also into ``committed``, when given)."""
    committed = [] if committed is None else committed

    def stage(connection: Any, prepared: tuple[int, list[int]]) -> tuple[int, list[int]]:
        run(connection, "SELECT 1")
        return prepared

    def apply(connection: Any, staged: tuple[int, list[int]]) -> tuple[int, list[int]]:
        run(connection, "SELECT 1")
        return staged

    context = Context()  # the chunks' units: its database's, as a command's
    try:
        apply_chunks(
            context.db, iter(chunks), stage, apply, committed.append, dry_run=dry_run,
            prepare=_pid_and_double, processes=processes,
        )  # fmt: skip
    finally:
        context.close()
    return committed


@pytest.mark.parametrize("dry_run", [False, True], ids=["commits", "dry-run"])
def test_chunks_are_prepared_in_worker_processes_and_applied_in_file_order(
    engine: Engine, dry_run: bool
) -> None:
    chunks = [[n, n + 1] for n in range(0, 40, 2)]

    committed = _run(chunks, dry_run=dry_run)

    assert [values for _, values in committed] == [[n * 2 for n in chunk] for chunk in chunks]
    preparers = [pid for pid, _ in committed]
    assert os.getpid() not in preparers
    assert len(set(preparers)) == 3  # each worker in turn
    assert multiprocessing.active_children() == []  # none left behind


def test_a_single_chunk_is_prepared_here_without_workers(engine: Engine) -> None:
    (committed,) = _run([[1, 2]])

    assert committed == (os.getpid(), [2, 4])


def test_a_chunk_its_worker_cannot_prepare_fails_in_its_place(engine: Engine) -> None:
    """The chunks before it are applied; its failure is raised as its own; the chunks
    prepared after it are not applied, and the workers are gone."""
    committed: Committed = []

    with pytest.raises(InvalidInput, match="line 99"):
        _run([[1], [2], [3], [-1], [5], [6], [7]], processes=2, committed=committed)

    assert [values for _, values in committed] == [[2], [4], [6]]
    assert multiprocessing.active_children() == []


def test_a_fault_of_the_file_comes_after_the_chunks_prepared_before_it(engine: Engine) -> None:
    def chunks() -> Iterator[list[int]]:
        yield from ([n] for n in range(5))
        raise InvalidInput("line 6: cannot be read")

    committed: Committed = []
    with pytest.raises(InvalidInput, match="line 6"):
        _run(chunks(), committed=committed)

    assert [values for _, values in committed] == [[n * 2] for n in range(5)]
    assert multiprocessing.active_children() == []


def test_a_stop_while_a_chunk_is_staged_cancels_its_statement_before_rolling_back(
    engine: Engine, context: Context
) -> None:
    """Ctrl-C while the pipeline waits for the stager: the stager's statement on that
    chunk's connection is cancelled and its end awaited before the chunk rolls back (a
    rollback sent while the stager still used the connection left the command waiting
    for ever, or SQLAlchemy logging a traceback); what was committed stays."""
    import signal
    import threading
    import time

    def stage(connection: Any, chunk: list[int]) -> list[int]:
        if chunk == [1]:
            run(connection, "SELECT pg_sleep(30)")
        return chunk

    committed: list[list[int]] = []
    stop = threading.Timer(1.0, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    started = time.monotonic()
    stop.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            apply_chunks(
                context.db, iter([[0], [1]]), stage, lambda connection, staged: staged,
                committed.append, dry_run=False,
            )  # fmt: skip
    finally:
        stop.cancel()

    assert time.monotonic() - started < 10  # the sleep was cancelled, not waited out
    assert committed == [[0]]
