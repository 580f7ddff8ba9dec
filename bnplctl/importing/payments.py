"""Payment files (the payment processor's settlement files): streamed, validated and
applied in chunks.

Per chunk (one transaction): the valid rows are COPYed into a temporary table and
classified as far as no lock is needed (while the chunk before is still being applied);
then, under the chunk's locks, rule 10's statements (``services/payments.py``) find the
references recorded before and record the payments a round at a time; rule 4 follows,
and the chunk commits.
A payment's ``reference`` is required in a file: running a file again after a crash
finds the payments of the committed chunks (``duplicate``) and applies the rest, so it
ends in the same state as one clean run. Each file is recorded in the file ledger
(``importing/ledger.py``), as a webhook file is: its counts per committed chunk, its
checksum and a ``payments.imported`` audit event at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from bnplctl.importing.readers import HashingReader, RawRow, read_rows
from bnplctl.statuses import FileKind
from bnplctl.validators import id_field, required_id, text_field, timestamp

if TYPE_CHECKING:
    from bnplctl.context import Context
    from bnplctl.services.payments import StagedPayments

OUTCOMES = (
    "applied",
    "duplicate",
    "conflict",
    "unknown_user",
    "unknown_installment",
    "overpayment",
    "invalid",
)
# How the file ledger keeps a payments file (``importing/ledger.py``).
FILES = LedgerKind(FileKind.PAYMENTS, "payments.imported", OUTCOMES)
PAYMENT_COLUMNS = ("reference", "amount")
# A payment's paid_at may run ahead of this machine's clock by a day (another time zone,
# a processor's clock), never more: a typo would otherwise date a payment in 2090.
PAID_AT_AHEAD = timedelta(days=1)


@dataclass(frozen=True)
class PaymentRow:
    line: int
    reference: str
    amount: Decimal
    user_id: str | None
    installment_id: int | None
    paid_at: datetime | None


def parse_payment(row: RawRow) -> PaymentRow:
    """One row of a payments file, validated; ``InvalidInput`` names the field. The
    same checks as ``schemas.PaymentRow`` (which is built on this function)."""
    from bnplctl import clock
    from bnplctl.money import parse_amount

    if row.error is not None:
        raise InvalidInput(row.error)
    fields = row.fields
    reference = required_id(fields.get("reference"), "reference")
    amount_raw = text_field(fields.get("amount"), "amount", 20)
    if amount_raw is None:
        raise InvalidInput("amount: required")
    amount = parse_amount(amount_raw)
    user_id = id_field(fields.get("user_id"), "user_id")
    installment_raw = text_field(fields.get("installment_id"), "installment_id", 20)
    installment_id = None
    if installment_raw is not None:
        if not (installment_raw.isascii() and installment_raw.isdigit()):
            raise InvalidInput("installment_id: must be a whole number")
        installment_id = int(installment_raw)
        if not 1 <= installment_id <= 2**63 - 1:
            raise InvalidInput("installment_id: out of range")
    if user_id is None and installment_id is None:
        raise InvalidInput("user_id or installment_id: one of them is required")
    paid_at = timestamp(fields.get("paid_at"), "paid_at")
    if paid_at is not None and paid_at > clock.now() + PAID_AT_AHEAD:
        raise InvalidInput("paid_at: must be no later than a day from now")
    return PaymentRow(
        line=row.line,
        reference=reference,
        amount=amount,
        user_id=user_id,
        installment_id=installment_id,
        paid_at=paid_at,
    )


def _copy_columns(row: RawRow) -> tuple[object, ...]:
    """A payment row's COPY columns after ``seq`` (``PAYMENT_ROW_COLUMNS``)."""
    payment = parse_payment(row)
    return (
        payment.line,
        payment.reference,
        payment.amount,
        payment.user_id,
        payment.installment_id,
        payment.paid_at.isoformat() if payment.paid_at else None,
        None,  # kind: a payment
        None,  # original_reference
        None,  # note (a reversal's reason)
    )


def parse_chunk(chunk: list[RawRow]) -> ParsedChunk:
    return parse_chunk_with(chunk, _copy_columns, "reference")


def stage_chunk(connection: Any, rows: list[RawRow]) -> tuple[ParsedChunk, StagedPayments]:
    """Parse a chunk, then stage its valid rows as every payment is staged (rule 10's
    ``stage_rows``: copied in, classified as far as no lock is needed)."""
    from bnplctl.services.payments import stage_rows

    chunk = parse_chunk(rows)
    return chunk, stage_rows(connection, chunk.copy_data)


def apply_staged(
    connection: Any,
    staged: tuple[ParsedChunk, StagedPayments],
    *,
    source: str,
    actor: str,
    grace_days: int,
) -> tuple[ParsedChunk, list[Rejected]]:
    """Apply a staged chunk under the chunk's locks; returns it with the rows not applied
    (the invalid ones included), in line order."""
    from bnplctl import clock
    from bnplctl.services import locks
    from bnplctl.services import payments as rule10

    chunk, payments = staged
    refused = list(chunk.invalid)
    if chunk.valid:
        locks.for_batch_chunk(connection)
        applied = rule10.apply_chunk(
            connection,
            staged=payments,
            source=source,
            now=clock.now(),
            actor=actor,
            grace_days=grace_days,
        )
        refused += [
            Rejected(item.line, item.reference, item.outcome, item.reason)
            for item in applied.not_applied
        ]
    return chunk, sorted(refused, key=lambda item: item.line)


def import_stream(
    name: str,
    rows: Iterable[RawRow],
    reader: HashingReader,
    report: IngestReport,
    *,
    context: Context,
    dry_run: bool,
) -> dict[str, Any]:
    """Import one file's rows, a chunk per transaction (a dry run: one, rolled back); the
    next chunk is staged while one is applied, and the file is recorded in the ledger as
    a webhook file is (``ledger.ingest_recorded``); returns its own summary."""
    return ingest_recorded(
        FILES, name, rows, reader, report, stage=stage_chunk,
        apply=lambda connection, staged, _: apply_staged(
            connection, staged, source=name, actor=context.acting,
            grace_days=context.settings.grace_days,
        ),
        chunk_rows=context.chunks.payments, context=context, dry_run=dry_run,
    )  # fmt: skip


def import_files(
    sources: list[tuple[str, int | None]],
    input_format: str,
    report: IngestReport,
    *,
    context: Context,
    dry_run: bool,
    progress: Callable[[int | None, str], Any],
) -> list[dict[str, Any]]:
    """Import each (name, size for a progress bar or None) in turn; returns their
    summaries (``batch.ingest_each``)."""
    return ingest_each(
        sources, input_format, report, read=partial(read_rows, required=PAYMENT_COLUMNS),
        database=context.db, dry_run=dry_run, progress=progress,
        one_file=lambda name, rows, reader: import_stream(
            name, rows, reader, report, context=context, dry_run=dry_run
        ),
    )  # fmt: skip
