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

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from bnplctl.errors import InvalidInput
from bnplctl.importing.batch import (
    IngestReport,
    ParsedChunk,
    Rejected,
    ingest_each,
)
from bnplctl.importing.batch import parse_chunk as parse_chunk_with
from bnplctl.importing.ledger import LedgerKind, ingest_recorded
from bnplctl.importing.readers import ColumnMap, HashingReader, RawRow, read_rows
from bnplctl.services.refund_states import CREATE_WORK_TABLES
from bnplctl.sql import Statement, run
from bnplctl.statuses import FileKind
from bnplctl.tuning import INDEX_LOOKUPS_ONLY
from bnplctl.validators import (
    CONTROL_CHARACTERS,
    ISO_TIMESTAMP,
    WEBHOOK_STATUSES,
    id_field,
    in_window,
    required_id,
    text_field,
    timestamp,
    webhook_status,
)

if TYPE_CHECKING:
    from bnplctl.context import Context
    from bnplctl.db import Executor

OUTCOMES = ("applied", "duplicate", "stale", "conflict", "unknown_refund", "invalid")
# How the file ledger keeps a webhook file (``importing/ledger.py``; ``webhooks files``).
FILES = LedgerKind(FileKind.WEBHOOKS, "webhooks.ingested", OUTCOMES)
WEBHOOK_COLUMNS = ("refund_id", "status")
# Every field of a webhook row (``schemas.WebhookRow``): what ``--map FIELD=COLUMN`` may name.
WEBHOOK_FIELDS = ("refund_id", "status", "merchant_reference", "event_id", "occurred_at", "amount")
_COPY_COLUMNS = (
    "seq",
    "line",
    "transaction_id",
    "target",
    "event_id",
    "occurred_at",
    "amount",
    "merchant_reference",
)


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookUpdate:
    line: int
    transaction_id: str
    target: str
    event_id: str | None
    occurred_at: datetime | None
    amount: Decimal | None
    merchant_reference: str | None


def parse_update(row: RawRow) -> WebhookUpdate:
    """One webhook row, validated; ``InvalidInput`` names the field.

    Plain functions for speed (the same ones ``schemas.WebhookRow`` is built on); a row
    they refuse is validated again by the model, whose message is the one reported
    (property-tested: the two agree on every row).
    """
    if row.error is not None:
        raise InvalidInput(row.error)
    try:
        return _quick_update(row)
    except InvalidInput:
        from bnplctl.schemas import WebhookRow

        WebhookRow.parse(row.fields)  # raises the model's message
        raise


def _quick_update(row: RawRow) -> WebhookUpdate:
    from bnplctl.money import parse_amount

    fields = row.fields
    transaction_id = required_id(fields.get("refund_id"), "refund_id")
    event_id = id_field(fields.get("event_id"), "event_id")
    target = webhook_status(fields.get("status"))
    occurred_at = timestamp(fields.get("occurred_at"), "occurred_at")
    amount_raw = text_field(fields.get("amount"), "amount", 20)
    return WebhookUpdate(
        line=row.line,
        transaction_id=transaction_id,
        target=target,
        event_id=event_id,
        occurred_at=occurred_at,
        amount=parse_amount(amount_raw) if amount_raw is not None else None,
        merchant_reference=id_field(fields.get("merchant_reference"), "merchant_reference"),
    )


# --- the chunk pipeline ------------------------------------------------------------------

# Each chunk starts here, in one round trip: the temporary tables (emptied at commit; a
# dry run's chunks share one transaction, so they are emptied here too) and the planner
# settings of the chunk's transaction (below).
_BEGIN_CHUNK = (
    """
    CREATE TEMP TABLE IF NOT EXISTS webhook_rows (
        seq integer NOT NULL,
        line integer NOT NULL,
        transaction_id text NOT NULL,
        target text NOT NULL,
        event_id text,
        occurred_at timestamptz,
        amount numeric(12,2),
        merchant_reference text
    ) ON COMMIT DELETE ROWS;
    TRUNCATE webhook_rows;
    """
    + CREATE_WORK_TABLES
)
# Everything that depends on nothing an earlier chunk writes, in one pass, into rule 6's
# ``refund_moves``: the refund of each row, unknown ids, amounts that do not match,
# events repeated inside the chunk, and each remaining row's round (its place among the
# chunk's rows for the same refund, in file order; ``stage_chunk`` then keeps the
# approvals of one plan in file order too). It needs no lock, so it runs while
# the chunk before is still being applied (``ingest_stream``); events ingested before
# are rule 6's ``_MOVE`` to find, once that chunk has committed. File order is ``seq``,
# the row's place in the chunk: ``line`` is only reported, and rows of a JSON array
# written on one line share it.
_PREPARE = Statement(
    """
    WITH looked_up AS (
        SELECT w.seq, w.line, w.transaction_id, w.target, w.event_id, w.occurred_at,
               w.merchant_reference, r.id AS refund_id,
               CASE WHEN r.id IS NULL THEN 'unknown_refund'
                    WHEN w.amount <> r.amount THEN 'invalid' END AS outcome,
               CASE WHEN r.id IS NULL THEN 'no refund with this refund_id'
                    WHEN w.amount <> r.amount THEN
                        'amount ' || w.amount || ' does not match the refund amount ' || r.amount
               END AS reason
        FROM webhook_rows w
        LEFT JOIN refunds r ON r.transaction_id = w.transaction_id
    ), with_first_of_event AS (
        SELECT l.*,
               first_value(l.seq) OVER first_row AS first_seq,
               first_value(l.line) OVER first_row AS first_line
        FROM looked_up l
        WINDOW first_row AS (PARTITION BY l.event_id, l.outcome IS NULL ORDER BY l.seq)
    ), repeated_events AS (
        SELECT f.*,
               CASE WHEN f.outcome IS NULL AND f.event_id IS NOT NULL
                         AND f.first_seq <> f.seq THEN 'duplicate'
               END AS dup_outcome,
               'event ' || f.event_id || ' repeats line ' || f.first_line AS dup_reason
        FROM with_first_of_event f
    ), prepared AS (
        INSERT INTO refund_moves (seq, line, transaction_id, target, event_id, occurred_at,
                                  merchant_reference, refund_id, outcome, reason, round)
        SELECT seq, line, transaction_id, target, event_id, occurred_at, merchant_reference,
               refund_id, coalesce(outcome, dup_outcome), coalesce(reason, dup_reason),
               CASE WHEN outcome IS NULL AND dup_outcome IS NULL THEN row_number() OVER (
                   PARTITION BY refund_id, outcome IS NULL AND dup_outcome IS NULL
                   ORDER BY seq) END
        FROM repeated_events
        RETURNING line, transaction_id, outcome, reason, round
    )
    SELECT line, transaction_id, outcome, reason, NULL AS rounds
    FROM prepared WHERE round IS NULL
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, coalesce(max(round), 0) FROM prepared
    """
)


# When a refund has several rows in the chunk: the rows to put in rounds
# (``services/rounds.py``), with their plans (a refund's plan never changes), in file order.
_TO_ORDER = Statement(
    """
    SELECT m.seq, m.refund_id, m.target, r.plan_id
    FROM refund_moves m
    JOIN refunds r ON r.id = m.refund_id
    WHERE m.round IS NOT NULL
    ORDER BY m.seq
    """
)
_SET_ROUNDS = Statement(
    """
    UPDATE refund_moves m SET round = v.round
    FROM unnest(CAST(:seqs AS integer[]), CAST(:rounds AS integer[])) AS v(seq, round)
    WHERE m.seq = v.seq AND m.round <> v.round
    """
)


def _copy_columns(row: RawRow) -> tuple[object, ...]:
    """A webhook row's COPY columns after ``seq`` (``_COPY_COLUMNS``)."""
    plain = _plain_columns(row)
    if plain is not None:
        return plain
    update = parse_update(row)
    return (
        update.line,
        update.transaction_id,
        update.target,
        update.event_id,
        update.occurred_at.isoformat() if update.occurred_at else None,
        update.amount,
        update.merchant_reference,
    )


def _plain_columns(row: RawRow) -> tuple[object, ...] | None:
    """The COPY columns of a plainly valid row, as ``parse_update`` gives them, in a few
    string operations (the stager parses every row of a file); None for any other row,
    which then takes ``parse_update``. Plain: every field text, no control character
    anywhere in the row, no ``amount``, ids printable and within their limits, a known
    status, a timestamp Python reads. Property-tested against ``parse_update``."""
    fields = row.fields
    if row.error is not None or fields.get("amount"):
        return None
    try:
        if CONTROL_CHARACTERS.search("".join(fields.values())):
            return None
    except TypeError:  # a JSON number, list, ...: not plain
        return None
    transaction_id = fields.get("refund_id", "").strip()
    event_id = fields.get("event_id", "").strip()
    target = WEBHOOK_STATUSES.get(fields.get("status", "").strip().lower())
    merchant_reference = fields.get("merchant_reference", "").strip()
    raw_moment = fields.get("occurred_at", "").strip()
    if (
        target is None
        or not 0 < len(transaction_id) <= 100
        or not transaction_id.isprintable()
        or len(event_id) > 100
        or not event_id.isprintable()
        or len(merchant_reference) > 100
        or not merchant_reference.isprintable()
        or len(raw_moment) > 40
    ):
        return None
    occurred_at = None
    if raw_moment:
        if not ISO_TIMESTAMP.fullmatch(raw_moment):
            return None  # the full parse says why
        try:
            moment = datetime.fromisoformat(raw_moment)
        except ValueError:
            return None
        offset = moment.utcoffset()
        if len(raw_moment) > 10 and not offset and "2000" <= raw_moment[:4] <= "2100":
            # A time in UTC (``Z``, ``+00:00`` or no offset) within the window: the
            # server reads the text Python has just read as the same instant
            # (``ISO_TIMESTAMP`` keeps to the forms both read alike), with no conversion
            # here. Other offsets are converted: the server takes only up to 15:59.
            occurred_at = raw_moment if offset is not None else raw_moment + "+00:00"
        else:  # a date alone, another offset, a year at the window's ends
            try:
                utc = (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(
                    UTC
                )
            except OverflowError:
                return None
            if not in_window(utc):
                return None
            occurred_at = utc.isoformat()
    return (
        row.line,
        transaction_id,
        target,
        event_id or None,
        occurred_at,
        None,
        merchant_reference or None,
    )


def parse_chunk(chunk: list[RawRow], columns: ColumnMap | None = None) -> ParsedChunk:
    """A chunk's rows parsed; with ``columns`` (``--map``), a reason naming a mapped
    field names its column too."""
    if columns is None:
        return parse_chunk_with(chunk, _copy_columns, "refund_id")

    def copy_columns(row: RawRow) -> tuple[object, ...]:
        try:
            return _copy_columns(row)
        except InvalidInput as exc:
            if row.error is not None:  # the reader's own (a key named twice): as it is
                raise
            raise InvalidInput(columns.labelled(exc.message)) from None

    return parse_chunk_with(chunk, copy_columns, "refund_id")


def _copy_rows(session: Executor, copy_data: str) -> None:
    from bnplctl.db import dbapi_connection

    with dbapi_connection(session).cursor() as cursor:
        cursor.copy_expert(
            f"COPY webhook_rows ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            io.StringIO(copy_data),
            size=1 << 20,
        )


@dataclass
class StagedChunk:
    """A chunk staged in its transaction's ``refund_moves`` (``stage_chunk``): the number
    of rounds to move, and the rows already refused (line, ref, outcome, reason)."""

    rounds: int = 0
    rejected: list[tuple[int, str, str, str | None]] = field(default_factory=list)


def stage_chunk(session: Executor, chunk: ParsedChunk) -> StagedChunk:
    """Copy a chunk's valid rows in and classify what needs no lock (``_PREPARE``)."""
    staged = StagedChunk()
    run(session, _BEGIN_CHUNK + INDEX_LOOKUPS_ONLY)
    if not chunk.valid:
        return staged
    _copy_rows(session, chunk.copy_data)
    for row in run(session, _PREPARE):
        if row.line is None:
            staged.rounds = int(row.rounds)
        else:
            staged.rejected.append(
                (int(row.line), str(row.transaction_id), str(row.outcome), row.reason)
            )
    if staged.rounds > 1:
        staged.rounds = _keep_approvals_in_file_order(session)
    return staged


def _keep_approvals_in_file_order(session: Executor) -> int:
    """Rule 7 shares a plan's balance among a round's approvals in file order; an
    approval must not come in an earlier round than an approval of the same plan before
    it in the file (it would when that one is its refund's second row, say). Moves rows
    to later rounds where needed; returns the number of rounds."""
    from bnplctl.services.rounds import put_in_rounds

    _, placed = put_in_rounds(
        session,
        _TO_ORDER,
        _SET_ROUNDS,
        lambda row: [
            (("refund", row.refund_id), 1),
            *([(("plan", row.plan_id), 0)] if row.target == "APPROVED" and row.plan_id else []),
        ],
    )
    return max(placed.values(), default=0)


def apply_staged(
    session: Executor, staged: StagedChunk, *, file_id: int | None, actor: str
) -> list[tuple[int, str, str, str | None]]:
    """Apply a staged chunk; returns the rows not applied (line, ref, outcome, reason) and
    leaves the applied count to the caller (``chunk.valid`` minus those).

    Rules 6, 7 and 4 as for a command, a round at a time, under the chunk's locks
    (``services/locks.py``); a dry run too (its one transaction then holds them until
    it rolls back): its writes must not deadlock with a command's.
    """
    from bnplctl import clock
    from bnplctl.services import locks, refund_application, refund_states

    rejected = list(staged.rejected)
    if staged.rounds:
        locks.for_batch_chunk(session)
    now = clock.now()
    for round_number in range(1, staged.rounds + 1):
        for not_moved in refund_states.move(
            session,
            round_number=round_number,
            source="webhook",
            file_id=file_id,
            now=now,
            actor=actor,
        ):
            assert not_moved.line is not None  # noqa: S101 - every file row has a line
            rejected.append(
                (not_moved.line, not_moved.transaction_id, not_moved.outcome, not_moved.reason)
            )
        refund_application.apply_approved_and_settle(
            session, source="webhook", file_id=file_id, now=now, actor=actor
        )
    return sorted(rejected)


# --- one file, start to end --------------------------------------------------------------


def ingest_stream(
    name: str,
    rows: Iterable[RawRow],
    reader: HashingReader,
    report: IngestReport,
    *,
    context: Context,
    dry_run: bool,
    columns: ColumnMap | None = None,
) -> dict[str, Any]:
    """Ingest one file's rows; returns the file's own summary (with its checksum).

    Each chunk is staged (``stage_chunk``: parsed, copied in, classified as far as no
    lock is needed) while the one before is applied (``apply_staged``), and committed in
    file order; the file is recorded in the ledger (``ledger.ingest_recorded``).
    ``columns``: the ``--map`` the rows were read with (``read_rows``)."""

    def stage(connection: Executor, rows: list[RawRow]) -> tuple[ParsedChunk, StagedChunk]:
        chunk = parse_chunk(rows, columns)
        return chunk, stage_chunk(connection, chunk)

    def apply(
        connection: Executor, staged: tuple[ParsedChunk, StagedChunk], file_id: int | None
    ) -> tuple[ParsedChunk, list[Rejected]]:
        chunk, moves = staged
        rejected = _rejected(apply_staged(connection, moves, file_id=file_id, actor=context.acting))
        return chunk, sorted(chunk.invalid + rejected, key=lambda item: item.line)

    return ingest_recorded(
        FILES, name, rows, reader, report, stage=stage, apply=apply,
        chunk_rows=context.chunks.webhooks, context=context, dry_run=dry_run,
    )  # fmt: skip


def ingest_files(
    sources: list[tuple[str, int | None]],
    input_format: str,
    report: IngestReport,
    *,
    context: Context,
    dry_run: bool,
    progress: Callable[[int | None, str], Any],
    column_map: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Ingest each (name, size for a progress bar or None) in turn; returns their
    summaries (``batch.ingest_each``). ``column_map``: {field: the file's column}
    (``--map``, checked by ``presets.parse_column_map``)."""
    columns = ColumnMap(column_map) if column_map else None
    return ingest_each(
        sources, input_format, report,
        read=partial(read_rows, required=WEBHOOK_COLUMNS, columns=columns),
        database=context.db, dry_run=dry_run, progress=progress,
        one_file=lambda name, rows, reader: ingest_stream(
            name, rows, reader, report, context=context, dry_run=dry_run, columns=columns
        ),
    )  # fmt: skip


def _rejected(rows: list[tuple[int, str, str, str | None]]) -> list[Rejected]:
    return [Rejected(line, key, outcome, reason or "") for line, key, outcome, reason in rows]
