"""The rounds of a batch chunk: its rows are applied one round at a time, one statement
per round, and each round sees what the rounds before it wrote.

A row must come after the rows before it in the file that it depends on: after the
previous row of the same refund or the same payer (``gap`` 1: a later round), or no
earlier than the previous approval of the same plan (``gap`` 0: the same round is
enough, as a round applies its rows in file order). ``in_file_order`` gives each row
the earliest round that keeps every such order: one pass in file order, since every
row a row depends on comes before it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bnplctl.sql import run

if TYPE_CHECKING:
    from bnplctl.db import Executor

# A row's place in its chunk, and what it must follow: (key, gap) pairs.
Dependencies = Iterable[tuple[Hashable, int]]


def in_file_order(rows: Iterable[tuple[int, Dependencies]]) -> dict[int, int]:
    """Each row's round (from 1), by its ``seq``; ``rows`` come in file order."""
    last: dict[Hashable, int] = {}
    rounds: dict[int, int] = {}
    for seq, dependencies in rows:
        keys = list(dependencies)
        place = max([1, *(last.get(key, 0) + gap for key, gap in keys)])
        for key, _ in keys:
            last[key] = place
        rounds[seq] = place
    return rounds


def put_in_rounds(
    executor: Executor,
    rows_in_file_order: str,
    set_rounds: str,
    dependencies: Callable[[Any], Dependencies],
) -> tuple[Sequence[Any], dict[int, int]]:
    """Read a chunk's rows (``rows_in_file_order``, each with its ``seq``), give each the
    round ``in_file_order`` finds from ``dependencies(row)``, and write them back
    (``set_rounds``, with ``:seqs`` and ``:rounds`` as arrays). Returns the rows and
    their rounds by ``seq``."""
    rows = run(executor, rows_in_file_order).all()
    placed = in_file_order((row.seq, dependencies(row)) for row in rows)
    seqs = list(placed)
    run(executor, set_rounds, {"seqs": seqs, "rounds": [placed[seq] for seq in seqs]})
    return rows, placed
