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

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
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
    from bnplctl.importing.presets import SettlementRow, TargetKind
    from bnplctl.services.payments import StagedPayments

# Today's outcomes first, in their order (a CSV summary's columns stay where they were),
# then those of the processors' reports (issue 26): a reversal applied (rule 12), one of
# an unknown payment or of more than is left of it, a row in another currency, a row
# that is no customer money (a fee, a payout: counted, never rejected).
OUTCOMES = (
    "applied",
    "duplicate",
    "conflict",
    "unknown_user",
    "unknown_installment",
    "overpayment",
    "invalid",
    "reversed",
    "unknown_payment",
    "over_reversal",
    "currency",
    "skipped",
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
    if row.error is not None:
        raise InvalidInput(row.error)
    fields = row.fields
    reference, amount = _reference_and_amount(fields)
    user_id = id_field(fields.get("user_id"), "user_id")
    installment_raw = text_field(fields.get("installment_id"), "installment_id", 20)
    installment_id = None if installment_raw is None else _installment_number(installment_raw)
    if user_id is None and installment_id is None:
        raise InvalidInput("user_id or installment_id: one of them is required")
    return PaymentRow(
        line=row.line,
        reference=reference,
        amount=amount,
        user_id=user_id,
        installment_id=installment_id,
        paid_at=_paid_at(fields),
    )


def _reference_and_amount(fields: Mapping[str, Any]) -> tuple[str, Decimal]:
    from bnplctl.money import parse_amount

    reference = required_id(fields.get("reference"), "reference")
    amount_raw = text_field(fields.get("amount"), "amount", 20)
    if amount_raw is None:
        raise InvalidInput("amount: required")
    return reference, parse_amount(amount_raw)


def _paid_at(fields: Mapping[str, Any]) -> datetime | None:
    """When the money moved (a payment's ``paid_at``, a reversal's too), if said: no
    later than a day from now."""
    from bnplctl import clock

    paid_at = timestamp(fields.get("paid_at"), "paid_at")
    if paid_at is not None and paid_at > clock.now() + PAID_AT_AHEAD:
        raise InvalidInput("paid_at: must be no later than a day from now")
    return paid_at


def _installment_number(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput("installment_id: must be a whole number")
    number = int(raw)
    if not 1 <= number <= 2**63 - 1:
        raise InvalidInput("installment_id: out of range")
    return number


def _reversal_columns(row: RawRow) -> tuple[object, ...]:
    """A reversal row of our own layout (``kind`` ``reversal``, rule 12): its own
    reference, the amount, the payment's reference (``original_reference``) and when the
    money went back (``paid_at``); its target is the payment's."""
    fields = row.fields
    reference, amount = _reference_and_amount(fields)
    original = required_id(fields.get("original_reference"), "original_reference")
    reversed_at = _paid_at(fields)
    when = reversed_at.isoformat() if reversed_at else None
    return (row.line, reference, amount, None, None, when, "reversal", original, None)


def _copy_columns(row: RawRow) -> tuple[object, ...]:
    """A row's COPY columns after ``seq`` (``PAYMENT_ROW_COLUMNS``): a payment, or with
    ``kind`` ``reversal`` a reversal (our own layout's fields, with or without ``--map``:
    a file that says a row takes money back is never read as money paid in)."""
    kind = row.fields.get("kind") if row.error is None else None
    if kind is not None and kind != "payment":
        named = text_field(kind, "kind", 20)
        if named is not None and named.lower() == "reversal":
            return _reversal_columns(row)
        if named is not None and named.lower() != "payment":
            raise InvalidInput("kind: must be payment or reversal")
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


# A file's reversal and reinstating rows whose payment no row before them recorded are
# put off until the file's last chunk has been applied, then staged and applied once
# more, in a chunk of their own (``batch.apply_chunks``' epilogue): a report's rows are
# applied as if its refunds came after their payments, whatever the order of its rows,
# and a file killed and run again ends as one clean run. At most ``HELD_ROWS`` are kept
# (memory stays flat); beyond them a row is ``unknown_payment`` at once, as it is when
# its payment is not in the file.
HELD_ROWS = 10_000


@dataclass(frozen=True)
class HeldRows:
    """The rows put off (COPY columns after ``seq``): the file's last chunk."""

    rows: list[tuple[object, ...]]


@dataclass
class Holding:
    """One file's rows put off, while its chunks are applied (``on``), then given back
    as the epilogue's chunk."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    on: bool = True

    def last_chunk(self) -> HeldRows | None:
        self.on = False
        return HeldRows(self.rows) if self.rows else None


def _held_chunk(held: HeldRows) -> ParsedChunk:
    from bnplctl.services.payments import copy_data

    rows = [(seq, *row) for seq, row in enumerate(held.rows)]
    return ParsedChunk(copy_data(rows), len(rows), [])


def stage_chunk(
    connection: Any, rows: list[RawRow] | HeldRows
) -> tuple[ParsedChunk, StagedPayments]:
    """Parse a chunk, then stage its valid rows as every payment is staged (rule 10's
    ``stage_rows``: copied in, classified as far as no lock is needed)."""
    from bnplctl.services.payments import stage_rows

    chunk = _held_chunk(rows) if isinstance(rows, HeldRows) else parse_chunk(rows)
    return chunk, stage_rows(connection, chunk.copy_data)


def apply_staged(
    connection: Any,
    staged: tuple[ParsedChunk, StagedPayments],
    *,
    source: str,
    actor: str,
    grace_days: int,
    holding: Holding | None = None,
) -> tuple[ParsedChunk, list[Rejected]]:
    """Apply a staged chunk under the chunk's locks; returns it with the rows not applied
    (the invalid ones included) and the reversals applied (``reversed``), in line
    order. While ``holding`` is on, the rows whose payment no row before them recorded
    are put off (``HELD_ROWS``): not counted in this chunk, given back with the last."""
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
        not_applied = applied.not_applied
        if holding is not None and holding.on:
            unknown = [item.line for item in not_applied if item.outcome == "unknown_payment"]
            if unknown and len(holding.rows) + len(unknown) <= HELD_ROWS:
                holding.rows += rule10.staged_input(connection, unknown)
                not_applied = [item for item in not_applied if item.outcome != "unknown_payment"]
                chunk = replace(chunk, valid=chunk.valid - len(unknown))
        refused += [
            Rejected(item.line, item.reference, item.outcome, item.reason) for item in not_applied
        ]
        # Reversals applied (rule 12; a settlement report's) are counted, not rejected.
        refused += [Rejected(line, "", "reversed", "") for line in applied.reversed]
    return chunk, sorted(refused, key=lambda item: item.line)


def import_stream(
    name: str,
    rows: Iterable[RawRow] | Iterable[SettlementRow | Rejected],
    reader: HashingReader,
    report: IngestReport,
    *,
    stage: Callable[[Any, Any], tuple[ParsedChunk, StagedPayments]] = stage_chunk,
    context: Context,
    dry_run: bool,
) -> dict[str, Any]:
    """Import one file's rows (staged by ``stage``: our own layout's, or a report's), a
    chunk per transaction (a dry run: one, rolled back); the next chunk is staged while
    one is applied, and the file is recorded in the ledger as a webhook file is
    (``ledger.ingest_recorded``); returns its own summary."""
    holding = Holding()
    return ingest_recorded(
        FILES, name, rows, reader, report, stage=stage,
        apply=lambda connection, staged, _: apply_staged(
            connection, staged, source=name, actor=context.acting,
            grace_days=context.settings.grace_days, holding=holding,
        ),
        chunk_rows=context.chunks.payments, context=context, dry_run=dry_run,
        epilogue=holding.last_chunk,
    )  # fmt: skip


def import_files(
    sources: list[tuple[str, int | None]],
    input_format: str,
    report: IngestReport,
    *,
    context: Context,
    dry_run: bool,
    progress: Callable[[int | None, str], Any],
    layout: SettlementLayout | None = None,
) -> list[dict[str, Any]]:
    """Import each (name, size for a progress bar or None) in turn; returns their
    summaries (``batch.ingest_each``). With a ``layout`` (``--preset``, ``--map``) the
    files are settlement reports read by it (``presets.settlement_reader``); without,
    our own layout, read as it always was."""
    if layout is not None:
        from bnplctl.importing.presets import settlement_reader

        settled = layout  # for the closure: a name mypy knows is not None
        return ingest_each(
            sources, "csv" if layout.preset and input_format == "auto" else input_format,
            report, read=settlement_reader(layout.preset, layout.column_map),
            database=context.db, dry_run=dry_run, progress=progress,
            one_file=lambda name, rows, reader: import_settlement_stream(
                name, rows, reader, report, layout=settled, context=context, dry_run=dry_run
            ),
        )  # fmt: skip
    return ingest_each(
        sources, input_format, report, read=partial(read_rows, required=PAYMENT_COLUMNS),
        database=context.db, dry_run=dry_run, progress=progress,
        one_file=lambda name, rows, reader: import_stream(
            name, rows, reader, report, context=context, dry_run=dry_run
        ),
    )  # fmt: skip


# --- the processors' own reports (--preset, --map, --target; issue 26) -------------------


@dataclass(frozen=True)
class SettlementLayout:
    """How a settlement report is read: a processor's ``preset`` (or None: our own fields),
    ``--map``'s columns, and what a target column names (``--target``)."""

    preset: str | None
    column_map: dict[str, str]
    target: TargetKind = "user"


def settlement_layout(
    preset: str | None, maps: list[str], target: str | None, input_format: str
) -> SettlementLayout | None:
    """The options ``--preset``, ``--map`` and ``--target`` checked together (a usage
    error, exit 2, before any file is read); None without a preset and a map: our own
    layout, read as it always was."""
    from bnplctl.errors import UsageProblem

    if preset is None and not maps:
        if target is not None:
            raise UsageProblem(
                "--target: says what a report's target column names; it goes with --preset"
                " or --map (our own layout names user_id or installment_id)"
            )
        return None
    from bnplctl.importing.presets import parse_column_map

    if preset is not None and input_format not in ("auto", "csv"):
        raise UsageProblem(
            f"--preset {preset} reads the processor's CSV report, not {input_format}"
        )
    column_map = parse_column_map(maps, preset)
    return SettlementLayout(
        preset, column_map, "installment" if target == "installment" else "user"
    )


def currency_checked(
    rows: Iterable[SettlementRow], expected: str | None
) -> Iterator[SettlementRow | Rejected]:
    """A report's rows, those in another currency than ``expected`` (``BNPL_CURRENCY``)
    as ``currency`` rejections; with none expected, the file's first row with a currency
    fixes it. Codes compare in any case (``usd`` is ``USD``)."""
    from bnplctl.validators import printable

    fixed = expected.upper() if expected else None
    fixed_by = "BNPL_CURRENCY"
    for row in rows:
        if row.currency is None or row.error is not None:
            yield row
            continue
        currency = row.currency.upper()
        if fixed is None:
            fixed, fixed_by = currency, f"the file's, from line {row.line}"
        if currency == fixed:
            yield row
        else:
            yield Rejected(
                row.line,
                printable((row.reference or "")[:100]),
                "currency",
                f"currency {printable(currency[:10])}, not {fixed} ({fixed_by})",
            )


def _settlement_columns(
    row: SettlementRow, target: TargetKind, latest: datetime
) -> tuple[object, ...]:
    """A report's row's COPY columns after ``seq`` (``PAYMENT_ROW_COLUMNS``): a payment to
    its target (a user, or an installment: ``target`` when the row does not say); a
    reversal or reinstating row with its own reference, the payment's
    (``original_reference``) and the processor's row type as its note (its target is the
    original payment's: rule 12). The preset checked the reference, the amount, the
    target's text and the time already; ``latest``: no later than a day from now."""
    if row.error is not None:
        raise InvalidInput(row.error)
    moved_at = row.occurred_at
    if moved_at is not None and moved_at > latest:
        raise InvalidInput("paid_at: must be no later than a day from now")
    when = moved_at.isoformat() if moved_at else None
    if row.kind == "payment":
        named = row.target_kind or target
        if row.target is None:
            raise InvalidInput("user_id or installment_id: one of them is required")
        if named == "installment":
            installment = _installment_number(row.target)
            return (row.line, row.reference, row.amount, None, installment, when, None, None, None)
        return (row.line, row.reference, row.amount, row.target, None, when, None, None, None)
    return (
        row.line,
        row.reference,
        row.amount,
        None,  # user_id: the original payment's
        None,  # installment_id: the original payment's
        when,
        row.kind,
        row.original_reference,
        row.row_type,
    )


def parse_settlement_chunk(
    chunk: list[SettlementRow | Rejected], target: TargetKind
) -> ParsedChunk:
    """Each row of a report's chunk: COPY columns, or settled here (``invalid`` naming the
    field, ``currency``, ``skipped`` with the processor's row type as its key), all of
    them in the chunk's ``invalid`` (the rows settled while parsing)."""
    import csv
    import io

    from bnplctl import clock
    from bnplctl.validators import printable

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    valid = 0
    settled: list[Rejected] = []
    latest = clock.now() + PAID_AT_AHEAD
    for row in chunk:
        if isinstance(row, Rejected):
            settled.append(row)
            continue
        if row.kind == "skipped":
            settled.append(Rejected(row.line, row.row_type, "skipped", row.skip_reason or ""))
            continue
        try:
            values = _settlement_columns(row, target, latest)
        except InvalidInput as exc:
            key = printable((row.reference or "")[:100])
            settled.append(Rejected(row.line, key, "invalid", exc.message))
            continue
        writer.writerow((valid, *values))
        valid += 1
    return ParsedChunk(buffer.getvalue(), valid, settled)


def stage_settlement_chunk(
    connection: Any, rows: list[SettlementRow | Rejected] | HeldRows, target: TargetKind
) -> tuple[ParsedChunk, StagedPayments]:
    """A report's chunk parsed, then staged as every payment is (``stage_chunk``)."""
    from bnplctl.services.payments import stage_rows

    if isinstance(rows, HeldRows):
        chunk = _held_chunk(rows)
    else:
        chunk = parse_settlement_chunk(rows, target)
    return chunk, stage_rows(connection, chunk.copy_data)


def import_settlement_stream(
    name: str,
    rows: Iterable[SettlementRow],
    reader: HashingReader,
    report: IngestReport,
    *,
    layout: SettlementLayout,
    context: Context,
    dry_run: bool,
) -> dict[str, Any]:
    """``import_stream`` for a report read by ``layout``: its rows checked for their
    currency (``BNPL_CURRENCY``, else the file's first), then staged and applied as a
    payments file's, a chunk per transaction, and recorded in the ledger alike."""
    return import_stream(
        name, currency_checked(rows, context.settings.currency), reader, report,
        stage=partial(stage_settlement_chunk, target=layout.target),
        context=context, dry_run=dry_run,
    )  # fmt: skip
