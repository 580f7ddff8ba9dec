"""What every batch file shares: per-row outcomes and their report, the rejects file, and
chunks read ahead of the database.

Valid rows are applied even when others are rejected; rejected rows are kept
(line, key, outcome, reason — never a raw personal value) for the report and
the ``--rejects`` file.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from bnplctl.errors import InputFileError

T = TypeVar("T")


@dataclass(frozen=True)
class Rejected:
    line: int
    key: str
    outcome: str
    reason: str


@dataclass
class BatchReport:
    outcomes: tuple[str, ...]
    counts: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def has_rejections(self) -> bool:
        return bool(self.rejected)

    def add(self, outcome: str, rejected: Rejected | None = None) -> None:
        self.counts[outcome] += 1
        if rejected is not None:
            self.rejected.append(rejected)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows} | {name: self.counts.get(name, 0) for name in self.outcomes}


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
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


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_rejects_path(path: Path) -> None:
    """Fail before any row is applied when the rejects file cannot be written."""
    try:
        with path.open("w", newline="", encoding="utf-8"):
            pass
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write the rejects file ({exc.strerror})") from None


def write_rejects(path: Path, rejected: list[Rejected], key_name: str) -> None:
    """The rejected rows as CSV: line, key, outcome, reason (no raw personal data)."""
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", key_name, "outcome", "reason"])
            for row in rejected:
                writer.writerow([row.line, row.key, row.outcome, row.reason])
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write the rejects file ({exc.strerror})") from None
