"""The file ledger: one row per batch file in ``ingested_files``, and its audit event.

The one writer of ``ingested_files`` (``tests/test_ledger.py`` holds every other module
to it): a webhook file (``webhooks ingest``) and a payments file (``payments import``)
are recorded alike, their kind apart (``statuses.FileKind``). A file is started in a
unit of its own before its first chunk; each chunk writes the file's counts so far in
the chunk's own transaction, so a run that stops early (interrupted, killed, a fault
later in the file, the database gone) leaves what was committed, without a checksum or
a finish; the finish writes the checksum, the counts and the finished time with the
file's audit event (``webhooks.ingested``, ``payments.imported``) in one statement. A
dry run records nothing: its callers never start a file. Times are the unit's clock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from bnplctl.services.audit import insert_events
from bnplctl.sql import run
from bnplctl.statuses import FileKind

if TYPE_CHECKING:
    from bnplctl.context import Context
    from bnplctl.db import Database, Executor
    from bnplctl.importing.batch import IngestReport, ParsedChunk, Rejected
    from bnplctl.importing.readers import HashingReader
    from bnplctl.services.listing import ListRequest, Page


@dataclass(frozen=True)
class LedgerKind:
    """How the ledger keeps one kind of file: its kind, the action of the audit event of
    a finished file, and the outcomes its rows can have (one count each, in this order)."""

    kind: FileKind
    action: str
    outcomes: tuple[str, ...]

    def counts(self, counts: Mapping[str, int]) -> dict[str, int]:
        return {name: counts.get(name, 0) for name in self.outcomes}


_START = """
INSERT INTO ingested_files (kind, file_name, sha256, rows, counts, started_at, actor)
VALUES (:kind, :name, '', 0, '{}', :now, :actor)
RETURNING id
"""

_COUNTS = """
UPDATE ingested_files
SET rows = :rows, counts = CAST(:counts AS jsonb)
WHERE id = :id
"""


# The file finished and its audit event, one statement: a file is never finished without
# its event, nor an event written for a file left unfinished.
_FINISH = """
WITH finished AS (
    UPDATE ingested_files
    SET sha256 = :sha256, rows = :rows, counts = CAST(:counts AS jsonb), finished_at = :now
    WHERE id = :id
    RETURNING id
)
""" + insert_events(  # noqa: S608 - fixed fragments, no input
    """
SELECT :now, :actor, :action, 'file', id::text, NULL, CAST(:details AS jsonb)
FROM finished
"""
)


def start_file(database: Database, kind: LedgerKind, name: str, actor: str) -> int:
    """Record that ``name`` is being loaded, in a unit of its own (so the record stays
    whatever happens to the chunks); returns the file's id."""
    from bnplctl import clock

    with database.unit(raw=True) as work:
        file_id: int = run(
            work.dbapi,
            _START,
            {"kind": kind.kind.value, "name": name, "now": clock.now(), "actor": actor},
        ).scalar_one()
    return file_id


def record_counts(
    connection: Executor, kind: LedgerKind, file_id: int, counts: Mapping[str, int]
) -> None:
    """The file's counts up to the chunk committing, in that chunk's transaction: a run
    that stops early leaves the record with what was committed, and no ``finished_at``."""
    shown = kind.counts(counts)
    run(
        connection,
        _COUNTS,
        {"id": file_id, "rows": sum(shown.values()), "counts": json.dumps(shown)},
    )


def finish_file(
    database: Database, kind: LedgerKind, file_id: int, summary: Mapping[str, Any], actor: str
) -> None:
    """The file's checksum, counts and finished time, and its audit event (``file``,
    ``sha256``, ``rows`` and a count per outcome), in one statement of one unit."""
    from bnplctl import clock

    counts = kind.counts(summary)
    details = {"file": summary["file"], "sha256": summary["sha256"], "rows": summary["rows"]}
    with database.unit(raw=True) as work:
        run(
            work.dbapi,
            _FINISH,
            {
                "id": file_id,
                "sha256": summary["sha256"],
                "rows": summary["rows"],
                "counts": json.dumps(counts),
                "now": clock.now(),
                "actor": actor,
                "action": kind.action,
                "details": json.dumps(details | counts),
            },
        )


# --- one recorded file, start to end (webhook files, payments files) -------------------

Row = TypeVar("Row")  # a file's row as its reader yields it

# A chunk applied: the chunk parsed, and its rows not applied (the invalid ones included),
# in line order.
Applied = tuple["ParsedChunk", list["Rejected"]]


def ingest_recorded(
    kind: LedgerKind,
    name: str,
    rows: Iterable[Row],
    reader: HashingReader,
    report: IngestReport,
    *,
    stage: Callable[[Any, list[Row]], Any],
    apply: Callable[[Any, Any, int | None], Applied],
    chunk_rows: int,
    context: Context,
    dry_run: bool,
    epilogue: Callable[[], Any | None] | None = None,
) -> dict[str, Any]:
    """One file's rows through ``batch.apply_chunks`` (``stage`` while the chunk before
    is applied; ``apply(connection, staged, file_id)`` under the chunk's locks), recorded
    in the ledger (not in a dry run): started before its first chunk, its counts written
    in each chunk's transaction, finished with its checksum and audit event;
    ``epilogue``: ``apply_chunks``'. Counts go
    to ``report`` (the command's) and to the file's own; returns the file's summary."""
    from bnplctl.importing.batch import IngestReport, apply_chunks, ramped_chunks

    file_report = IngestReport(report.outcomes)
    database, actor = context.db, context.acting
    file_id = None if dry_run else start_file(database, kind, name, actor)

    def apply_and_record(connection: Any, staged: Any) -> Applied:
        chunk, not_applied = apply(connection, staged, file_id)
        if file_id is not None:  # in the chunk's transaction: kill -9 cannot lose them
            counts = Counter(file_report.counts)
            counts["applied"] += applied_in(chunk, not_applied)
            counts.update(item.outcome for item in not_applied)
            record_counts(connection, kind, file_id, counts)
        return chunk, not_applied

    def committed(result: Applied) -> None:
        count_chunk(*result, (report, file_report))

    apply_chunks(
        database,
        ramped_chunks(rows, chunk_rows),
        stage,
        apply_and_record,
        committed,
        dry_run=dry_run,
        epilogue=epilogue,
    )
    summary = {"file": name, "sha256": reader.sha256.hexdigest()} | file_report.summary()
    if file_id is not None:
        finish_file(database, kind, file_id, summary, actor)
    return summary


def applied_in(chunk: ParsedChunk, not_applied: list[Rejected]) -> int:
    """The rows of a chunk applied: ``not_applied`` holds the invalid ones too."""
    return chunk.valid + len(chunk.invalid) - len(not_applied)


def count_chunk(
    chunk: ParsedChunk, not_applied: list[Rejected], reports: Iterable[IngestReport]
) -> None:
    """A committed chunk counted in each of ``reports``."""
    for report in reports:
        report.add_chunk(applied_in(chunk, not_applied), not_applied)


def list_files(
    connection: Executor, kind: LedgerKind, request: ListRequest
) -> Page[dict[str, Any]]:
    """The files of one kind, newest first; counts one field per outcome, as a run's
    summary has them."""
    from bnplctl.services.listing import Page

    limit = None if request.limit is None else request.limit + 1  # LIMIT NULL: all
    rows = run(
        connection,
        "SELECT id, file_name, sha256, rows, counts, started_at, finished_at, actor"
        " FROM ingested_files WHERE kind = :kind ORDER BY id DESC LIMIT :limit",
        {"kind": kind.kind.value, "limit": limit},
    )
    shown = (
        {
            "id": row.id,
            "file": row.file_name,
            "rows": row.rows,
            **kind.counts(row.counts),
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "actor": row.actor,
            "sha256": row.sha256 or None,  # known once the file is read to its end
        }
        for row in rows
    )

    def count() -> int:
        return int(
            run(
                connection,
                "SELECT count(*) FROM ingested_files WHERE kind = :kind",
                {"kind": kind.kind.value},
            ).scalar_one()
        )

    return Page(rows=shown, limit=request.limit, count=count)
