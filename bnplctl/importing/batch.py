"""The batch loader: rows in, per-row outcomes out, one transaction per chunk.

Valid rows are applied even when others are rejected; rejected rows are kept
(line, key, outcome, reason — never a raw personal value) for the report and
the ``--rejects`` file.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from bnplctl.errors import InputFileError, InvalidInput
from bnplctl.importing.readers import RawRow

T = TypeVar("T")
CHUNK_ROWS = 5000
USER_OUTCOMES = ("created", "duplicate", "invalid")
USER_COLUMNS = ("name", "phone", "passport", "card", "dob")


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


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


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


def import_users(rows: Iterable[RawRow], *, actor: str, source: str = "import") -> BatchReport:
    """Validate, protect and insert users, committing each chunk.

    Validation (CPU, this thread) of one chunk overlaps the insert of the previous one
    (database, a worker thread: psycopg2 releases the GIL while it waits).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from bnplctl import pii
    from bnplctl.clock import business_today
    from bnplctl.db import get_engine, session_scope
    from bnplctl.schemas import UserCreate
    from bnplctl.services.users import InsertOutcome, ProtectedUser, insert_users, protect

    keyring = pii.get_keyring()
    today = business_today()
    get_engine()  # connect (and check the schema) before the worker starts
    report = BatchReport(USER_OUTCOMES)

    def insert(ready: list[ProtectedUser]) -> list[InsertOutcome]:
        with session_scope() as session:
            return insert_users(session, ready, actor=actor, source=source)

    def collect(outcomes: list[InsertOutcome]) -> None:
        for outcome in outcomes:
            if outcome.created:
                report.add("created")
            else:
                reason = outcome.reason or "duplicate"
                rejected = Rejected(outcome.line, outcome.user_id, "duplicate", reason)
                report.add("duplicate", rejected)

    pending: Future[list[InsertOutcome]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnpl-insert") as worker:
        for chunk in chunked(rows, CHUNK_ROWS):
            ready: list[ProtectedUser] = []
            for row in chunk:
                key = str(row.fields.get("user_id") or "")[:64]
                if row.error is not None:
                    report.add("invalid", Rejected(row.line, key, "invalid", row.error))
                    continue
                try:
                    user = UserCreate.parse(row.fields, today)
                except InvalidInput as exc:
                    report.add("invalid", Rejected(row.line, key, "invalid", exc.message))
                    continue
                ready.append(protect(user, keyring, row.line))
            if pending is not None:
                collect(pending.result())
            pending = worker.submit(insert, ready)
        if pending is not None:
            collect(pending.result())
    report.rejected.sort(key=lambda item: item.line)
    return report
