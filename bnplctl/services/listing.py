"""Every list the same way: ``--limit``/``--all``, ``--sort FIELD`` (``-FIELD``
descending) over a fixed set of fields, streamed in batches, and whether it was cut.

A list fetches one row more than it shows: that row says the list was cut, and only
then is the total counted (for the ``showing 100 of 249`` hint), so an uncut list costs
one query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, func, select
from sqlalchemy.sql import Select

from bnplctl.db import LIST_BATCH
from bnplctl.errors import UsageProblem

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_LIMIT = 100  # rows a list shows without --limit or --all


@dataclass(frozen=True)
class ListRequest:
    """What an operator asked of a list: at most ``limit`` rows (None: all), in ``sort``
    order (a field, ``-`` first for descending; None: the list's own order)."""

    limit: int | None = DEFAULT_LIMIT
    sort: str | None = None


def ordering(
    sort: str | None, fields: Mapping[str, Any], default: Sequence[Any], tiebreak: Any
) -> list[Any]:
    """The ORDER BY of ``sort`` over ``fields`` (name → column), ending with
    ``tiebreak`` so that the order is total; a name not in ``fields`` is a usage error."""
    if sort is None:
        return list(default)
    name = sort.strip().removeprefix("-")
    if name not in fields:
        raise UsageProblem(f"--sort: unknown field {name!r}; one of: {', '.join(fields)}")
    column = fields[name]
    first = column.desc() if sort.strip().startswith("-") else column.asc()
    return [first, tiebreak]


@dataclass
class Page(Generic[T]):
    """The rows of a list, streamed, at most ``limit`` of them; after iterating,
    ``cut`` says whether more were there and ``total()`` counts them all."""

    rows: Iterator[T]
    limit: int | None
    count: Callable[[], int]
    cut: bool = field(default=False, init=False)

    def __iter__(self) -> Iterator[T]:
        for shown, row in enumerate(self.rows):
            if self.limit is not None and shown == self.limit:
                self.cut = True
                return
            yield row

    def total(self) -> int:
        return self.count()


def page(executor: Any, query: Select[Any], request: ListRequest) -> Page[Any]:
    """``query`` (already ordered) as a page of ``request``: one row beyond the limit is
    fetched to tell a cut list, and the total is counted only when asked. ``executor`` is
    an ORM session (rows of one entity arrive as that entity) or a Core connection."""
    bounded = query.limit(request.limit + 1) if request.limit is not None else query
    rows = iter(_run(executor, bounded.execution_options(yield_per=LIST_BATCH)))

    def count() -> int:
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        first = _run(executor, counted).one()
        return int(first[0] if isinstance(first, Row) else first)

    return Page(rows=rows, limit=request.limit, count=count)


def _run(executor: Any, statement: Any) -> Any:
    """SQLModel's ``Session.exec`` (its ``execute`` is deprecated), or a connection's
    ``execute``."""
    run = getattr(executor, "exec", None)
    return run(statement) if run is not None else executor.execute(statement)


def in_batches(items: Iterable[T], render: Callable[[list[T]], list[R]]) -> Iterator[R]:
    """``render`` applied ``LIST_BATCH`` items at a time (one query per batch for what
    the items need besides themselves): an export of any size takes flat memory."""
    from itertools import islice

    remaining = iter(items)
    while batch := list(islice(remaining, LIST_BATCH)):
        yield from render(batch)
