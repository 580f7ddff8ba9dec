"""Merchant refund-status webhook files: streamed, validated, classified and applied in chunks.

Per chunk (one transaction): the valid rows are COPYed into a temporary table,
every row is classified with set-based SQL, the updates run as ``UPDATE … FROM``,
approvals are applied to their plans (rule 7) with the same statements as
``refunds approve``, and the chunk commits. Rows of one refund inside a chunk are
taken in file order, one "round" per row, so a later row sees the earlier one's
effect. Memory stays flat: only the first rejected rows are kept for the screen;
the rest stream to the ``--rejects`` file.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlmodel import Session

from bnplctl.errors import InputFileError, InvalidInput
from bnplctl.importing.batch import Rejected, chunked
from bnplctl.importing.readers import RawRow

OUTCOMES = ("applied", "duplicate", "stale", "conflict", "unknown_refund", "invalid")
STATUS_TARGETS = {
    "approved": "APPROVED",
    "rejected": "REJECTED",
    "failed": "REJECTED",
    "processing": "PENDING",
}
WEBHOOK_COLUMNS = ("refund_id", "status")
CHUNK_ROWS = 5000
SHOWN_REJECTS = 20
_COPY_COLUMNS = (
    "line",
    "transaction_id",
    "target",
    "event_id",
    "occurred_at",
    "amount",
    "merchant_reference",
)


# --- reading -----------------------------------------------------------------------------


class HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them (the file's checksum) and counting them."""

    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._source = source
        self._on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def buffered(self) -> io.BufferedReader:
        """A buffered view (peek, lines) over this reader, as the file readers expect."""
        return io.BufferedReader(self, buffer_size=1024 * 1024)

    def readinto(self, buffer: Any) -> int:
        chunk = self._source.read(len(buffer))
        count = len(chunk)
        buffer[:count] = chunk
        self.sha256.update(chunk)
        self.size += count
        if self._on_bytes is not None and count:
            self._on_bytes(count)
        return count


@dataclass(frozen=True)
class WebhookUpdate:
    line: int
    transaction_id: str
    target: str
    event_id: str | None
    occurred_at: datetime | None
    amount: Decimal | None
    merchant_reference: str | None


def _text(fields: dict[str, Any], name: str, limit: int) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{name}: must be text")
    cleaned = str(value).strip()
    if len(cleaned) > limit:
        raise InvalidInput(f"{name}: at most {limit} characters")
    return cleaned or None


def parse_update(row: RawRow) -> WebhookUpdate:
    """One webhook row, validated; ``InvalidInput`` names the field."""
    from bnplctl.money import parse_amount

    if row.error is not None:
        raise InvalidInput(row.error)
    fields = row.fields
    transaction_id = _text(fields, "refund_id", 100)
    if transaction_id is None:
        raise InvalidInput("refund_id: required")
    raw_status = (_text(fields, "status", 20) or "").lower()
    if raw_status not in STATUS_TARGETS:
        raise InvalidInput("status: must be approved, rejected, failed or processing")
    occurred_raw = _text(fields, "occurred_at", 40)
    occurred_at = None
    if occurred_raw is not None:
        try:
            occurred_at = datetime.fromisoformat(occurred_raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("occurred_at: not an ISO 8601 timestamp") from None
        if occurred_at.tzinfo is None:
            occurred_at = occurred_at.replace(tzinfo=UTC)
    amount_raw = _text(fields, "amount", 20)
    return WebhookUpdate(
        line=row.line,
        transaction_id=transaction_id,
        target=STATUS_TARGETS[raw_status],
        event_id=_text(fields, "event_id", 200),
        occurred_at=occurred_at,
        amount=parse_amount(amount_raw) if amount_raw is not None else None,
        merchant_reference=_text(fields, "merchant_reference", 100),
    )


# --- reporting ---------------------------------------------------------------------------


@dataclass
class IngestReport:
    """Counts per outcome; the first rejected rows; the rest streamed to a writer."""

    counts: Counter[str] = field(default_factory=Counter)
    shown: list[Rejected] = field(default_factory=list)
    rejected_total: int = 0
    sink: Any = None  # a csv.writer, or None

    def add(self, outcome: str, rejected: Rejected | None = None) -> None:
        self.counts[outcome] += 1
        if rejected is None:
            return
        self.rejected_total += 1
        if len(self.shown) < SHOWN_REJECTS:
            self.shown.append(rejected)
        if self.sink is not None:
            self.sink.writerow([rejected.line, rejected.key, rejected.outcome, rejected.reason])

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows} | {name: self.counts.get(name, 0) for name in OUTCOMES}


# --- the chunk pipeline ------------------------------------------------------------------

_CREATE = text(
    "CREATE TEMP TABLE IF NOT EXISTS webhook_rows ("
    " line integer PRIMARY KEY, transaction_id text NOT NULL, target text NOT NULL,"
    " event_id text, occurred_at timestamptz, amount numeric(12,2), merchant_reference text,"
    " refund_id bigint, user_id text, outcome text, reason text, round integer"
    ") ON COMMIT DELETE ROWS"
)
_RESOLVE = text(
    "UPDATE webhook_rows w SET refund_id = r.id, user_id = r.user_id"
    " FROM refunds r WHERE r.transaction_id = w.transaction_id"
)
_UNKNOWN = text(
    "UPDATE webhook_rows SET outcome = 'unknown_refund',"
    " reason = 'no refund with this refund_id' WHERE refund_id IS NULL"
)
_AMOUNT_MISMATCH = text(
    "UPDATE webhook_rows w SET outcome = 'invalid',"
    " reason = 'amount ' || w.amount || ' does not match the refund amount ' || r.amount"
    " FROM refunds r WHERE r.id = w.refund_id AND w.outcome IS NULL"
    " AND w.amount IS NOT NULL AND w.amount <> r.amount"
)
_SEEN_EVENTS = text(
    "UPDATE webhook_rows w SET outcome = 'duplicate', reason = CASE WHEN d.seen"
    "  THEN 'event ' || w.event_id || ' was ingested before'"
    "  ELSE 'event ' || w.event_id || ' repeats line ' || d.first_line END"
    " FROM (SELECT line, first_value(line) OVER same_event AS first_line,"
    "   row_number() OVER same_event AS n,"
    "   EXISTS (SELECT 1 FROM webhook_events e WHERE e.event_id = webhook_rows.event_id) AS seen"
    "  FROM webhook_rows WHERE event_id IS NOT NULL AND outcome IS NULL"
    "  WINDOW same_event AS (PARTITION BY event_id ORDER BY line)) AS d"
    " WHERE w.line = d.line AND (d.n > 1 OR d.seen)"
)
_ROUNDS = text(
    "WITH ordered AS (SELECT line, row_number() OVER (PARTITION BY refund_id ORDER BY line) AS n"
    " FROM webhook_rows WHERE outcome IS NULL)"
    " UPDATE webhook_rows w SET round = o.n FROM ordered o WHERE o.line = w.line"
    " RETURNING w.round"
)
_LOCK_ROUND = text(
    "SELECT count(*) FROM (SELECT r.id FROM refunds r"
    " WHERE r.id IN (SELECT refund_id FROM webhook_rows WHERE round = :round)"
    " ORDER BY r.id FOR UPDATE) AS locked"
)
_CLASSIFY = text(
    "UPDATE webhook_rows w SET"
    " outcome = CASE"
    "  WHEN w.occurred_at < r.last_event_at THEN 'stale'"
    "  WHEN w.target = r.status OR (w.target = 'APPROVED' AND r.status = 'COMPLETED')"
    "   THEN 'duplicate'"
    "  WHEN r.status <> 'PENDING' THEN 'conflict'"
    "  ELSE 'applied' END,"
    " reason = CASE"
    "  WHEN w.occurred_at < r.last_event_at THEN 'older than the last applied update'"
    "  WHEN w.target = r.status OR (w.target = 'APPROVED' AND r.status = 'COMPLETED')"
    "   THEN 'the refund is already ' || r.status"
    "  WHEN r.status <> 'PENDING' THEN 'the refund is ' || r.status || ' already (final)'"
    "  END"
    " FROM refunds r WHERE r.id = w.refund_id AND w.round = :round AND w.outcome IS NULL"
)
_APPLY_ROUND = text(
    "WITH moved AS ("
    " UPDATE refunds r SET status = w.target, processed_at = now(), updated_at = now(),"
    "  last_event_at = coalesce(w.occurred_at, r.last_event_at),"
    "  merchant_reference = coalesce(w.merchant_reference, r.merchant_reference)"
    " FROM webhook_rows w"
    " WHERE w.refund_id = r.id AND w.round = :round AND w.outcome = 'applied'"
    " RETURNING r.id, r.user_id, r.status, w.line, w.event_id"
    "), audited AS ("
    " INSERT INTO audit_events (actor, action, entity, entity_id, user_id, details)"
    " SELECT :actor, 'refund.status_changed', 'refund', id::text, user_id, jsonb_build_object("
    "  'from', 'PENDING', 'to', status, 'source', 'webhook', 'file_id', CAST(:file_id AS bigint),"
    "  'line', line, 'event_id', event_id) FROM moved"
    ") SELECT id FROM moved WHERE status = 'APPROVED'"
)
_RECORD_EVENTS = text(
    "INSERT INTO webhook_events (event_id, refund_id, user_id, status, outcome, occurred_at,"
    " file_id)"
    " SELECT event_id, refund_id, user_id, target, outcome, occurred_at, :file_id"
    " FROM webhook_rows"
    " WHERE event_id IS NOT NULL AND refund_id IS NOT NULL AND outcome <> 'invalid'"
    " ORDER BY line ON CONFLICT (event_id) DO NOTHING"
)
_REJECTED = text(
    "SELECT line, transaction_id, outcome, reason FROM webhook_rows"
    " WHERE outcome <> 'applied' ORDER BY line"
)


def _copy_rows(session: Session, updates: list[WebhookUpdate]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for update in updates:
        writer.writerow(
            (
                update.line,
                update.transaction_id,
                update.target,
                update.event_id,
                update.occurred_at.isoformat() if update.occurred_at else None,
                update.amount,
                update.merchant_reference,
            )
        )
    buffer.seek(0)
    connection = session.connection().connection.driver_connection
    assert connection is not None  # noqa: S101 - a live session always has one
    with connection.cursor() as cursor:
        cursor.copy_expert(
            f"COPY webhook_rows ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            buffer,
        )


def process_chunk(
    session: Session, updates: list[WebhookUpdate], *, file_id: int | None, actor: str
) -> list[tuple[int, str, str, str | None]]:
    """Classify and apply one chunk; returns the rows not applied (line, ref, outcome, reason)
    and leaves the applied count to the caller (``len(updates)`` minus those)."""
    from bnplctl.services.refunds import apply_refunds

    session.execute(_CREATE)
    session.execute(text("TRUNCATE webhook_rows"))
    if not updates:
        return []
    _copy_rows(session, updates)
    for statement in (_RESOLVE, _UNKNOWN, _AMOUNT_MISMATCH, _SEEN_EVENTS):
        session.execute(statement)
    rounds = max((row[0] for row in session.execute(_ROUNDS)), default=0)
    for round_number in range(1, rounds + 1):
        session.execute(_LOCK_ROUND, {"round": round_number})
        session.execute(_CLASSIFY, {"round": round_number})
        approved = [
            int(row[0])
            for row in session.execute(
                _APPLY_ROUND, {"round": round_number, "actor": actor, "file_id": file_id}
            )
        ]
        apply_refunds(session, approved, actor=actor)
    session.execute(_RECORD_EVENTS, {"file_id": file_id})
    return [
        (int(row.line), str(row.transaction_id), str(row.outcome), row.reason)
        for row in session.execute(_REJECTED)
    ]


# --- one file, start to end --------------------------------------------------------------


def ingest_stream(
    name: str,
    rows: Iterable[RawRow],
    reader: HashingReader,
    report: IngestReport,
    *,
    actor: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Ingest one file's rows; returns the file's own summary (with its checksum)."""
    from bnplctl.db import session_scope

    file_report = IngestReport(sink=None)
    file_id = None if dry_run else _start_file(name, actor)
    if dry_run:
        with session_scope() as session:
            for chunk in chunked(rows, CHUNK_ROWS):
                _run_chunk(session, chunk, None, actor, (report, file_report))
            session.rollback()
    else:
        for chunk in chunked(rows, CHUNK_ROWS):
            with session_scope() as session:
                _run_chunk(session, chunk, file_id, actor, (report, file_report))
    summary = {"file": name, "sha256": reader.sha256.hexdigest()} | file_report.summary()
    if file_id is not None:
        _finish_file(file_id, summary, actor)
    return summary


def ingest_files(
    sources: list[tuple[str, int | None]],
    input_format: str,
    report: IngestReport,
    *,
    actor: str,
    dry_run: bool,
    progress: Callable[[int | None, str], Any],
) -> list[dict[str, Any]]:
    """Ingest each (name, size for a progress bar or None) in turn; returns their summaries.

    ``progress(size, name)`` is a context manager yielding a byte counter or None.
    """
    from bnplctl.importing.readers import detect_format, open_input, read_rows

    files: list[dict[str, Any]] = []
    for name, size in sources:
        with open_input(name) as raw, progress(size, name) as advance:
            reader = HashingReader(raw, on_bytes=advance)
            stream = reader.buffered()
            fmt = detect_format(name, stream, input_format)
            rows = read_rows(stream, fmt, WEBHOOK_COLUMNS)
            files.append(ingest_stream(name, rows, reader, report, actor=actor, dry_run=dry_run))
    return files


def _run_chunk(
    session: Session,
    chunk: list[RawRow],
    file_id: int | None,
    actor: str,
    reports: tuple[IngestReport, ...],
) -> None:
    valid: list[WebhookUpdate] = []
    invalid: list[Rejected] = []
    for row in chunk:
        try:
            valid.append(parse_update(row))
        except InvalidInput as exc:
            key = str(row.fields.get("refund_id") or "")[:100]
            invalid.append(Rejected(row.line, key, "invalid", exc.message))
    rejected = [
        Rejected(line, key, outcome, reason or "")
        for line, key, outcome, reason in process_chunk(
            session, valid, file_id=file_id, actor=actor
        )
    ]
    for report in reports:
        for _ in range(len(valid) - len(rejected)):
            report.add("applied")
        for item in sorted(invalid + rejected, key=lambda r: r.line):
            report.add(item.outcome, item)


def _start_file(name: str, actor: str) -> int:
    from bnplctl import clock
    from bnplctl.db import session_scope

    with session_scope() as session:
        file_id: int = session.execute(
            text(
                "INSERT INTO ingested_files (file_name, sha256, rows, counts, started_at, actor)"
                " VALUES (:name, '', 0, '{}', :started_at, :actor) RETURNING id"
            ),
            {"name": name, "started_at": clock.now(), "actor": actor},
        ).scalar_one()
    return file_id


def _finish_file(file_id: int, summary: dict[str, Any], actor: str) -> None:
    import json

    from bnplctl import clock
    from bnplctl.db import session_scope

    counts = {name: summary[name] for name in OUTCOMES}
    with session_scope() as session:
        session.execute(
            text(
                "WITH finished AS ("
                " UPDATE ingested_files SET sha256 = :sha256, rows = :rows,"
                "  counts = CAST(:counts AS jsonb), finished_at = :finished_at"
                " WHERE id = :id RETURNING id, file_name)"
                " INSERT INTO audit_events (actor, action, entity, entity_id, details)"
                " SELECT :actor, 'webhooks.ingested', 'file', id::text,"
                "  CAST(:details AS jsonb) FROM finished"
            ),
            {
                "id": file_id,
                "sha256": summary["sha256"],
                "rows": summary["rows"],
                "counts": json.dumps(counts),
                "finished_at": clock.now(),
                "actor": actor,
                "details": json.dumps(
                    {"file": summary["file"], "sha256": summary["sha256"], "rows": summary["rows"]}
                    | counts
                ),
            },
        )


def open_rejects(path: Path) -> tuple[Any, Any]:
    """A CSV writer for rejected rows and the handle to close."""
    try:
        handle = path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write the rejects file ({exc.strerror})") from None
    writer = csv.writer(handle)
    writer.writerow(["line", "refund_id", "outcome", "reason"])
    return writer, handle


def list_files(session: Session, limit: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT id, file_name, sha256, rows, counts, started_at, finished_at, actor"
            " FROM ingested_files ORDER BY id DESC LIMIT :limit"
        ),
        {"limit": limit},
    ).all()
    return [
        {
            "id": row.id,
            "file": row.file_name,
            "sha256": row.sha256,
            "rows": row.rows,
            "counts": {name: row.counts.get(name, 0) for name in OUTCOMES},
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "actor": row.actor,
        }
        for row in rows
    ]
