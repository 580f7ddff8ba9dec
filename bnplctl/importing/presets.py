"""The payment processors' own settlement reports, read as each processor writes them,
into one normalized row per record (``SettlementRow``); and ``--map FIELD=COLUMN`` for
any other layout (issue 26, section 2).

Each preset finds its columns by header name, in any order (extra columns ignored; a
missing one stops the file, exit 65, naming the column and the preset), and turns the
processor's row types, signs, units and time stamps into ours. Rows that are not
customer money (fees, payouts, transfers, balance moves) are ``skipped``, with why; a
row type a preset does not know is a row ``error`` (never silently skipped: it may be
customer money). Nothing is ever read as a float; references stay the text they are
(``1.23E+15`` included). Reading streams a record at a time with the readers' bounds.

Where the layouts come from:

- ``adyen-settlement``: Adyen's "Settlement details report" (docs.adyen.com, reporting
  > settlement-reconciliation > transaction-level > settlement-details-report, and the
  older "Settlement detail report structure" page with its column positions and the
  allowed values of ``Type``: Fee, MiscCosts, MerchantPayout, Refunded, Settled,
  Chargeback, SecondChargeback, ChargebackReversed, RefundedReversed,
  DepositCorrection, InvoiceDeduction, MatchedStatement, ManualCorrected,
  BankInstructionReturned, EpaPaid, Balancetransfer, PaymentCost, PaidOut,
  PaidOutReversed); the sample rows on that page (``...,2013-06-03 11:26:49,CET,
  Settled,...``); Gr4vy's published mapping of the same report (Gross Credit (GC) for
  Settled, Gross Debit (GC) for Refunded; Creation Date with its TimeZone applied).
- ``stripe-payouts``: Stripe's itemized payout reconciliation / balance change
  reports (docs.stripe.com/reports/report-types/payout-reconciliation: columns
  ``balance_transaction_id``, ``created_utc``, ``created``, ``currency`` (lower case),
  ``gross`` signed in major units, ``reporting_category``, ``source_id``,
  ``charge_id``, ``payment_metadata[KEY]``) and the reporting categories of
  docs.stripe.com/reports/reporting-categories (as listed in stripe-go's
  ``BalanceTransactionReportingCategory``).
- ``paypal-settlement``: PayPal's Settlement Report Specification ("STL",
  developer.paypal.com/docs/reports/sftp-reports/settlement-report; spec 9.0.x): record
  types RH, FH, SH, CH, SB, SF, SC, RF, RC, FF; the CH record names the SB columns;
  amounts unsigned in minor units with a ``CR``/``DR`` column; dates
  ``YYYY/MM/DD HH:MM:SS ±HHMM``; text fields quoted, numbers and dates not; a UTF-8
  byte-order mark; and the T-code groups of developer.paypal.com/reports/reference/t-codes
  ("the event group is sufficient for reconciliation").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import IO, Any, Literal

from bnplctl.errors import InvalidInput, UsageProblem
from bnplctl.importing import readers
from bnplctl.importing.readers import Format
from bnplctl.money import CENT, MAX_AMOUNT, parse_amount
from bnplctl.validators import id_field, in_window, printable, shown_id, text_field, timestamp

Kind = Literal["payment", "reversal", "reinstating", "skipped"]
TargetKind = Literal["user", "installment"]

ADYEN = "adyen-settlement"
STRIPE = "stripe-payouts"
PAYPAL = "paypal-settlement"
PRESETS: tuple[str, ...] = (ADYEN, STRIPE, PAYPAL)

# Our own fields, which ``--map FIELD=COLUMN`` may name (issue 26); ``currency`` too, so
# that a custom layout's currency is checked as a preset's is.
MAP_FIELDS: tuple[str, ...] = (
    "reference",
    "user_id",
    "installment_id",
    "target",
    "amount",
    "paid_at",
    "kind",
    "original_reference",
    "currency",
)
# The fields that name who paid: the only ones ``--map`` may set beside a preset.
TARGET_FIELDS: tuple[str, ...] = ("target", "user_id", "installment_id")
_TARGET_KINDS: dict[str, TargetKind | None] = {
    "target": None,
    "user_id": "user",
    "installment_id": "installment",
}


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """One record of a settlement file, normalized.

    ``kind`` says what the record does (None only for a record whose type could not be
    read); ``error`` set means the row cannot be used (the payments pipeline's
    ``invalid``), whatever else it carries (``reference``, when it could be read, names
    it in a report). ``row_type`` is the processor's own type (``Settled``, ``refund``,
    ``T1107``); a skipped row keeps ``skip_reason`` (``fee``, ``payout``, ...) and
    nothing else of the record. ``amount`` is positive with two places; ``target`` the
    raw text naming who paid (a user or installment id: ``target_kind``, or ``--target``
    when None); ``original_reference`` the payment a reversal or reinstating row refers
    to; ``occurred_at`` aware, in UTC.
    """

    line: int
    kind: Kind | None
    row_type: str
    reference: str | None = None
    original_reference: str | None = None
    target: str | None = None
    target_kind: TargetKind | None = None
    amount: Decimal | None = None
    currency: str | None = None
    occurred_at: datetime | None = None
    skip_reason: str | None = None
    error: str | None = None


# --- --map ---------------------------------------------------------------------------------


def parse_column_map(
    options: Iterable[str],
    preset: str | None = None,
    *,
    fields: tuple[str, ...] = MAP_FIELDS,
    one_field_a_column: bool = False,
) -> dict[str, str]:
    """``--map FIELD=COLUMN`` options as {field: column}; a malformed option, an unknown
    or repeated field, or (beside a preset) a field other than the target's is a usage
    error (exit 2). Whether the file has the column is checked when it is read.

    ``fields``: the fields that may be named (a payments file's by default; ``webhooks
    ingest`` gives a webhook file's). ``one_field_a_column``: a column may hold one field
    only, so a column named twice, or named for a field and also another field's own
    name while that field is not mapped elsewhere, is a usage error too (names compared
    as a file's are read: without case and surrounding spaces)."""
    mapping: dict[str, str] = {}
    for option in options:
        name, separator, column = option.partition("=")
        name, column = name.strip().lower(), column.strip()
        if not separator or not name or not column:
            raise UsageProblem(f"--map: expected FIELD=COLUMN, got {_shown(option)!r}")
        if name not in fields:
            raise UsageProblem(
                f"--map: unknown field {_shown(name)!r} (fields: {', '.join(fields)})"
            )
        if name in mapping:
            raise UsageProblem(f"--map: the field {name} is given twice")
        if len(column) > 200 or not column.isprintable():
            raise UsageProblem(f"--map {name}: a column name of 1 to 200 printable characters")
        if preset is not None and name not in TARGET_FIELDS:
            raise UsageProblem(
                f"--map {name}: with --preset {preset}, --map names the target's column"
                " only (target=, user_id= or installment_id=)"
            )
        mapping[name] = column
    if one_field_a_column:
        _one_field_a_column(mapping, fields)
    targets = [name for name in TARGET_FIELDS if name in mapping]
    if preset is not None and len(targets) > 1:
        raise UsageProblem(f"--map: {' and '.join(targets)}: give one target column")
    if "target" in mapping and len(targets) > 1:
        raise UsageProblem("--map: target= or user_id=/installment_id=, not both")
    return mapping


def _one_field_a_column(mapping: Mapping[str, str], fields: tuple[str, ...]) -> None:
    """No column of ``mapping`` holds two fields: named twice, or named for one field
    while it is another's own name (that field, unmapped, would read it too)."""
    named: dict[str, str] = {}
    for name, column in mapping.items():
        key = column.lower()
        if key in named:
            raise UsageProblem(
                f"--map: the column {_shown(column)!r} is named for two fields"
                f" ({named[key]} and {name})"
            )
        named[key] = name
    for key, name in named.items():
        if key in fields and key != name and key not in mapping:
            raise UsageProblem(
                f"--map: the column {_shown(mapping[name])!r} is named for two fields"
                f" ({name}, and {key} by its name: map {key} too)"
            )


def _shown(text: str) -> str:
    return shown_id(text[:60])


# --- reading ------------------------------------------------------------------------------

Reader = Callable[[IO[bytes], Format], Iterator[SettlementRow]]


def settlement_reader(preset: str | None, column_map: Mapping[str, str] | None = None) -> Reader:
    """A reader for ``batch.ingest_each`` (``read(stream, format)``): the file's rows,
    read by ``preset`` (None: our own fields, found under ``column_map``'s columns)."""
    if preset is not None and preset not in PRESETS:
        raise UsageProblem(f"--preset: must be one of {', '.join(PRESETS)}")
    mapping = dict(column_map or {})

    def read(stream: IO[bytes], fmt: Format) -> Iterator[SettlementRow]:
        return read_settlement(stream, preset=preset, column_map=mapping, fmt=fmt)

    return read


def read_settlement(
    stream: IO[bytes],
    *,
    preset: str | None,
    column_map: Mapping[str, str] | None = None,
    fmt: Format = "csv",
) -> Iterator[SettlementRow]:
    """The rows of one file, one per record (a PayPal report's header, footer and summary
    records are none), each with the file's line number. A file that cannot be read, or
    lacks a column, raises ``InvalidInput`` naming the line (exit 65)."""
    mapping = dict(column_map or {})
    if preset is None:
        return _read_custom(stream, fmt, mapping)
    if preset not in PRESETS:
        raise UsageProblem(f"--preset: must be one of {', '.join(PRESETS)}")
    if fmt != "csv":
        raise UsageProblem(f"--preset {preset} reads the processor's CSV report, not {fmt}")
    target = _target_override(mapping)
    if preset == PAYPAL:
        return _read_paypal(stream, target)
    layout = _ADYEN_LAYOUT if preset == ADYEN else _STRIPE_LAYOUT
    return _read_preset_csv(stream, layout, target)


@dataclass(frozen=True)
class _Target:
    """The column naming who paid: the preset's, or ``--map``'s (and what it names)."""

    column: str | None = None
    kind: TargetKind | None = None
    mapped: bool = False


def _target_override(mapping: Mapping[str, str]) -> _Target:
    for name in TARGET_FIELDS:
        if name in mapping:
            return _Target(mapping[name], _TARGET_KINDS[name], mapped=True)
    return _Target()


def _collapse(name: str) -> str:
    """A column name as it is compared: case and runs of blanks ignored (PayPal's spec
    once spelt ``Transaction  Debit or Credit`` with two spaces)."""
    return " ".join(name.split()).lower()


class _Columns:
    """A header's columns by name; ``text`` reads a row's field (stripped; blank: None)."""

    def __init__(self, header: list[str], line: int) -> None:
        self.keys: dict[str, str] = {}
        for name in header:
            if not name:
                continue
            folded = _collapse(name)
            if folded in self.keys:  # one column to the preset: which would be read?
                raise InvalidInput(
                    f"line {line}: the column {_shown(name)!r} is named twice"
                    f" (as {_shown(self.keys[folded])!r})"
                )
            self.keys[folded] = name
        self.line = line
        self._found: dict[str, str | None] = {}  # a name asked for -> the header's key

    def has(self, name: str) -> bool:
        return _collapse(name) in self.keys

    def require(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Each (column, whose) must be in the header: else exit 65 naming the missing
        columns and who reads them (``the adyen-settlement preset``, ``--map ...``)."""
        missing = [f"{column} ({whose})" for column, whose in wanted if not self.has(column)]
        if missing:
            raise InvalidInput(f"line {self.line}: missing column(s): {'; '.join(missing)}")

    def text(self, fields: Mapping[str, Any], name: str | None) -> Any:
        if name is None:
            return None
        try:
            key = self._found[name]
        except KeyError:  # once per name and header, not once per row
            key = self._found[name] = self.keys.get(_collapse(name))
        value = fields.get(key) if key is not None else None
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value


# --- the rows' common parts ---------------------------------------------------------------

_CURRENCY = re.compile(r"[A-Za-z]{3}")


@dataclass
class _Draft:
    """A row being read: what is known so far, so that an error row keeps its
    reference."""

    line: int
    kind: Kind | None
    row_type: str
    reference: str | None = None
    original_reference: str | None = None
    target: str | None = None
    target_kind: TargetKind | None = None
    amount: Decimal | None = None
    currency: str | None = None
    occurred_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def done(self, *, currency_required: bool = True) -> SettlementRow:
        def name(field_name: str) -> str:
            return self.labels.get(field_name, field_name)

        if self.reference is None:
            raise InvalidInput(f"{name('reference')}: required")
        if self.amount is None:
            raise InvalidInput(f"{name('amount')}: required")
        if currency_required and self.currency is None:
            raise InvalidInput(f"{name('currency')}: required")
        if self.kind == "payment" and self.target is None:
            raise InvalidInput(f"{name('target')}: required (who paid)")
        if self.kind in ("reversal", "reinstating") and self.original_reference is None:
            raise InvalidInput(f"{name('original_reference')}: required (the payment it refers to)")
        return self.row()

    def row(self, error: str | None = None) -> SettlementRow:
        return SettlementRow(
            line=self.line,
            kind=self.kind,
            row_type=self.row_type,
            reference=self.reference,
            original_reference=None if error else self.original_reference,
            target=None if error else self.target,
            target_kind=None if error else self.target_kind,
            amount=None if error else self.amount,
            currency=None if error else self.currency,
            occurred_at=None if error else self.occurred_at,
            error=error,
        )


def _build(
    draft: _Draft, fill: Callable[[_Draft], None], currency_required: bool = True
) -> SettlementRow:
    """The row ``fill`` reads into ``draft``, or an error row naming what failed."""
    try:
        fill(draft)
        return draft.done(currency_required=currency_required)
    except InvalidInput as fault:
        return draft.row(fault.message)


def _skipped(line: int, row_type: str, reason: str) -> SettlementRow:
    return SettlementRow(line=line, kind="skipped", row_type=row_type, skip_reason=reason)


@lru_cache(maxsize=512)  # a report has a handful of types: checked once each
def _row_type(raw: Any) -> str:
    """A processor's row type as a row keeps it: printable, short, no number in it."""
    return shown_id(str(raw or "")[:40])


def _identifier(raw: Any, label: str) -> str | None:
    return id_field(raw, label)


def _currency(raw: Any, label: str) -> str:
    text = text_field(raw, label, 10)
    if text is None:
        raise InvalidInput(f"{label}: required")
    if not _CURRENCY.fullmatch(text):
        raise InvalidInput(f"{label}: must be a three-letter ISO 4217 code")
    return text.upper()


def _major_units(raw: Any, label: str) -> Decimal:
    text = text_field(raw, label, 20)
    if text is None:
        raise InvalidInput(f"{label}: required")
    return parse_amount(text, label)


def _in_utc(moment: datetime, label: str) -> datetime:
    in_utc = moment.astimezone(UTC)
    if not in_window(in_utc):
        raise InvalidInput(f"{label}: must be from 2000-01-01 to 2100-12-31")
    return in_utc


_LOCAL_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
)


def _local_time(raw: Any, label: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]``, naive (its zone is given elsewhere)."""
    text = text_field(raw, label, 40)
    found = _LOCAL_TIME.fullmatch(text or "")
    if found is None:
        raise InvalidInput(f"{label}: must be a time written YYYY-MM-DD HH:MM:SS")
    year, month, day, hour, minute, second, fraction = found.groups()
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            int((fraction or "0").ljust(6, "0")),
        )  # fmt: skip
    except ValueError:
        raise InvalidInput(f"{label}: not a calendar date and time") from None


# --- time zones (Adyen's TimeZone column) -------------------------------------------------

# Abbreviations as Adyen writes them, each a fixed offset from UTC: the abbreviation
# already says whether summer time applies (CET in winter, CEST in summer), so a zone
# with rules (``ZoneInfo("CET")``) would be wrong. CST is taken as US Central and IST as
# India (both have other meanings elsewhere).
_ABBREVIATIONS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "UT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1, "IST": 5.5,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "GST": 4, "PKT": 5, "ICT": 7, "WIB": 7, "HKT": 8, "SGT": 8, "AWST": 8, "JST": 9,
    "KST": 9, "ACST": 9.5, "ACDT": 10.5, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
    "BRT": -3, "ART": -3, "AST": -4, "ADT": -3, "EST": -5, "EDT": -4, "CST": -6,
    "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7, "AKST": -9, "AKDT": -8,
    "HST": -10,
}  # fmt: skip
_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])([0-9]{1,2})(?::?([0-9]{2}))?")


@lru_cache(maxsize=128)  # bounded: a file may hold any number of distinct (bad) names
def zone_named(name: str) -> tzinfo | None:
    """The zone a report's time zone column names: an abbreviation (``CET``, ``PDT``)
    as its fixed offset, ``UTC+01:00``-like offsets, or an IANA name
    (``Europe/Amsterdam``; a local time it shows twice is taken as the first); None for
    anything else."""
    upper = name.strip().upper()
    if upper in _ABBREVIATIONS:
        return timezone(timedelta(hours=_ABBREVIATIONS[upper]), upper)
    offset = _OFFSET.fullmatch(upper)
    if offset is not None:
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            return None
        return timezone(-delta if sign == "-" else delta)
    if "/" not in name or not re.fullmatch(r"[A-Za-z0-9_+\-/]{3,64}", name.strip()):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


# --- CSV presets (Adyen, Stripe) ----------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    name: str
    required: tuple[str, ...]
    target: str  # the default target column
    row: Callable[[_Columns, Mapping[str, Any], int, _Target], SettlementRow]
    check: Callable[[_Columns], None] = lambda columns: None


def _read_preset_csv(
    stream: IO[bytes], layout: _Layout, target: _Target
) -> Iterator[SettlementRow]:
    found: list[_Columns] = []
    whose = f"the {layout.name} preset"

    def check(header: list[str], line: int) -> None:
        columns = _Columns(header, line)
        wanted = [(column, whose) for column in layout.required]
        if target.mapped and target.column is not None:
            wanted.append((target.column, f"--map {_mapped_field(target)}={target.column}"))
        else:
            wanted.append((layout.target, f"{whose}'s target; --map target=COLUMN names another"))
        columns.require(wanted)
        layout.check(columns)
        found.append(columns)

    for raw in readers.read_rows(stream, "csv", on_header=check):
        if raw.error is not None:
            yield SettlementRow(line=raw.line, kind=None, row_type="", error=raw.error)
            continue
        yield layout.row(found[0], raw.fields, raw.line, target)


def _mapped_field(target: _Target) -> str:
    return {None: "target", "user": "user_id", "installment": "installment_id"}[target.kind]


def _target_of(
    columns: _Columns, fields: Mapping[str, Any], default: str, target: _Target
) -> tuple[str | None, str]:
    column = target.column if target.mapped and target.column else default
    return _identifier(columns.text(fields, column), column), column


# Adyen: Type → kind, and the types that are not customer money → why they are skipped.
_ADYEN_KINDS: dict[str, Kind] = {
    "settled": "payment",
    "refunded": "reversal",
    "chargeback": "reversal",
    "secondchargeback": "reversal",
    "chargebackreversed": "reinstating",
    "refundedreversed": "reinstating",
}
_ADYEN_SKIPPED: dict[str, str] = {
    "fee": "fee",
    "misccosts": "fee",
    "paymentcost": "fee",
    "merchantpayout": "payout",
    "paidout": "payout",
    "paidoutreversed": "payout",
    "bankinstructionreturned": "payout",
    "balancetransfer": "transfer",
    "merchantpayin": "transfer",
    "invoicededuction": "invoice_deduction",
    "depositcorrection": "balance",
    "reserveadjustment": "balance",
    "matchedstatement": "balance",
    "manualcorrected": "adjustment",
    "epapaid": "other",
}


def _adyen_row(
    columns: _Columns, fields: Mapping[str, Any], line: int, target: _Target
) -> SettlementRow:
    raw_type = columns.text(fields, "Type")
    row_type = _row_type(raw_type)
    key = str(raw_type or "").lower()
    if key in _ADYEN_SKIPPED:
        return _skipped(line, row_type, _ADYEN_SKIPPED[key])
    kind = _ADYEN_KINDS.get(key)
    draft = _Draft(line, kind, row_type)
    draft.labels = {
        "reference": "Psp Reference" if kind == "payment" else "Modification Reference",
        "original_reference": "Psp Reference",
        "currency": "Gross Currency",
        "amount": "Gross Credit (GC)" if kind != "reversal" else "Gross Debit (GC)",
    }

    def fill(draft: _Draft) -> None:
        if kind is None:
            draft.reference = _identifier(columns.text(fields, "Psp Reference"), "Psp Reference")
            raise InvalidInput(f"Type: {row_type!r} is not a type the {ADYEN} preset reads")
        if kind == "payment":
            draft.reference = _identifier(columns.text(fields, "Psp Reference"), "Psp Reference")
        else:
            draft.reference = _identifier(
                columns.text(fields, "Modification Reference"), "Modification Reference"
            )
            draft.original_reference = _identifier(
                columns.text(fields, "Psp Reference"), "Psp Reference"
            )
        draft.target, draft.labels["target"] = _target_of(
            columns, fields, "Merchant Reference", target
        )
        draft.target_kind = target.kind
        draft.amount = _adyen_amount(columns, fields, kind)
        draft.currency = _currency(columns.text(fields, "Gross Currency"), "Gross Currency")
        draft.occurred_at = _adyen_time(columns, fields)

    return _build(draft, fill)


def _adyen_amount(columns: _Columns, fields: Mapping[str, Any], kind: Kind) -> Decimal:
    """Gross Debit (GC) or Gross Credit (GC), unsigned: exactly one is filled, the debit
    for what leaves the merchant (a reversal), the credit for what comes in."""
    debit = columns.text(fields, "Gross Debit (GC)")
    credit = columns.text(fields, "Gross Credit (GC)")
    if (debit is None) == (credit is None):
        raise InvalidInput("Gross Debit (GC), Gross Credit (GC): exactly one must be filled")
    wanted = "Gross Debit (GC)" if kind == "reversal" else "Gross Credit (GC)"
    if (debit is not None) != (kind == "reversal"):
        raise InvalidInput(f"{wanted}: required for this Type (the other column is filled)")
    return _major_units(debit if debit is not None else credit, wanted)


def _adyen_time(columns: _Columns, fields: Mapping[str, Any]) -> datetime:
    local = _local_time(columns.text(fields, "Creation Date"), "Creation Date")
    zone_text = text_field(columns.text(fields, "TimeZone"), "TimeZone", 64)
    if zone_text is None:
        raise InvalidInput("TimeZone: required")
    zone = zone_named(zone_text)
    if zone is None:
        raise InvalidInput(f"TimeZone: {_shown(zone_text)!r} is not a time zone bnplctl knows")
    return _in_utc(local.replace(tzinfo=zone), "Creation Date")


_ADYEN_LAYOUT = _Layout(
    name=ADYEN,
    required=(
        "Psp Reference",
        "Modification Reference",
        "Type",
        "Creation Date",
        "TimeZone",
        "Gross Currency",
        "Gross Debit (GC)",
        "Gross Credit (GC)",
    ),
    target="Merchant Reference",
    row=_adyen_row,
)


# Stripe: reporting_category → kind, and the categories skipped → why.
_STRIPE_KINDS: dict[str, Kind] = {
    "charge": "payment",
    "refund": "reversal",
    "dispute": "reversal",
    # The uncaptured part of an authorization given back: the charge row carries the
    # whole authorization, so this part is taken back from the payment.
    "partial_capture_reversal": "reversal",
    "refund_failure": "reinstating",
    "dispute_reversal": "reinstating",
}
_STRIPE_SKIPPED: dict[str, str] = {
    "fee": "fee",
    "tax": "fee",
    "platform_earning": "fee",
    "platform_earning_refund": "fee",
    "payout": "payout",
    "payout_reversal": "payout",
    "transfer": "transfer",
    "transfer_reversal": "transfer",
    "connect_collection_transfer": "transfer",
    "topup": "balance",
    "topup_reversal": "balance",
    "advance": "balance",
    "advance_funding": "balance",
    "anticipation_repayment": "balance",
    "risk_reserved_funds": "balance",
    "connect_reserved_funds": "balance",
    "unreconciled_customer_funds": "balance",
    "adjustment": "adjustment",
    "other_adjustment": "adjustment",
    "issuing_authorization_hold": "issuing",
    "issuing_authorization_release": "issuing",
    "issuing_transaction": "issuing",
    "other": "other",
}
_SIGNED = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]+)?)")
STRIPE_TARGET = "payment_metadata[bnpl_reference]"


def _stripe_time_column(columns: _Columns) -> str:
    """``created_utc`` (always UTC) when the report has it, else ``created`` (UTC when
    the report was run without a time zone, as the preset expects)."""
    return "created_utc" if columns.has("created_utc") else "created"


def _stripe_check(columns: _Columns) -> None:
    if not columns.has("created_utc") and not columns.has("created"):
        raise InvalidInput(
            f"line {columns.line}: missing column(s): created_utc or created (the {STRIPE} preset)"
        )


def _stripe_row(
    columns: _Columns, fields: Mapping[str, Any], line: int, target: _Target
) -> SettlementRow:
    raw_category = columns.text(fields, "reporting_category")
    row_type = _row_type(raw_category)
    key = str(raw_category or "").lower()
    if key in _STRIPE_SKIPPED:
        return _skipped(line, row_type, _STRIPE_SKIPPED[key])
    kind = _STRIPE_KINDS.get(key)
    own = "balance_transaction_id" if key == "partial_capture_reversal" else "source_id"
    if kind == "reinstating" and columns.text(fields, "balance_transaction_id") is not None:
        # A refund's failure and a dispute's reversal share the refund's or dispute's
        # source_id with the reversal they undo: their own id is the balance transaction.
        own = "balance_transaction_id"
    time_column = _stripe_time_column(columns)
    draft = _Draft(line, kind, row_type)
    draft.labels = {
        "reference": "charge_id" if kind == "payment" else own,
        "original_reference": "charge_id",
        "currency": "currency",
        "amount": "gross",
    }

    def fill(draft: _Draft) -> None:
        if kind is None:
            draft.reference = _identifier(columns.text(fields, "source_id"), "source_id")
            raise InvalidInput(
                f"reporting_category: {row_type!r} is not a category the {STRIPE} preset reads"
            )
        charge = _identifier(columns.text(fields, "charge_id"), "charge_id")
        if kind == "payment":
            draft.reference = charge or _identifier(columns.text(fields, "source_id"), "source_id")
        else:
            draft.reference = _identifier(columns.text(fields, own), own)
            draft.original_reference = charge
        draft.target, draft.labels["target"] = _target_of(columns, fields, STRIPE_TARGET, target)
        draft.target_kind = target.kind
        draft.amount = _stripe_amount(columns.text(fields, "gross"), kind)
        draft.currency = _currency(columns.text(fields, "currency"), "currency")
        moment = _local_time(columns.text(fields, time_column), time_column)
        draft.occurred_at = _in_utc(moment.replace(tzinfo=UTC), time_column)

    return _build(draft, fill)


def _stripe_amount(raw: Any, kind: Kind) -> Decimal:
    """``gross``, signed major units: what takes money back is negative in the report."""
    text = text_field(raw, "gross", 24)
    found = _SIGNED.fullmatch(text or "")
    if found is None:
        raise InvalidInput("gross: must be a number written with digits, a point and a sign")
    negative = found.group(1) == "-"
    if negative != (kind == "reversal"):
        expected = "negative" if kind == "reversal" else "positive"
        raise InvalidInput(f"gross: must be {expected} for this reporting_category")
    return parse_amount(found.group(2), "gross")


_STRIPE_LAYOUT = _Layout(
    name=STRIPE,
    required=("reporting_category", "gross", "currency", "source_id", "charge_id"),
    target=STRIPE_TARGET,
    row=_stripe_row,
    check=_stripe_check,
)


# --- PayPal settlement report (STL) -------------------------------------------------------

_STL_RECORDS = frozenset({"RH", "FH", "SH", "CH", "SB", "SF", "SC", "RF", "RC", "FF"})
_PAYPAL_REQUIRED = (
    "Transaction ID",
    "PayPal Reference ID",
    "Transaction Event Code",
    "Transaction Initiation Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
)
PAYPAL_TARGET = "Invoice ID"
_T_CODE = re.compile(r"T([0-9]{2})([0-9]{2})")
_PAYPAL_REVERSALS = frozenset({"T1106", "T1107", "T1201"})
_PAYPAL_REINSTATING = frozenset({"T1202"})
# Holds on the balance while a dispute or a payout is decided, and their releases.
_PAYPAL_HOLDS = frozenset({"T1105", "T1110", "T1111"})
# What a T-code group is, for the rows skipped (PayPal: the group is enough to reconcile).
_PAYPAL_GROUPS: dict[str, str] = {
    "01": "fee",
    "02": "currency_conversion",
    "03": "deposit",
    "04": "payout",
    "05": "debit_card",
    "06": "withdrawal",
    "07": "deposit",
    "08": "bonus",
    "09": "incentive",
    "10": "bill_pay",
    "11": "reversal_other",
    "12": "adjustment",
    "13": "authorization",
    "14": "dividend",
    "15": "hold",
    "16": "deposit",
    "17": "withdrawal",
    "18": "withdrawal",
    "19": "correction",
    "20": "transfer",
    "21": "reserve",
    "22": "transfer",
    "30": "other",
    "50": "other",
    "97": "balance",
    "98": "other",
    "99": "other",
}
_PAYPAL_TIME = re.compile(
    r"([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _read_paypal(stream: IO[bytes], target: _Target) -> Iterator[SettlementRow]:
    """The SB records of a settlement report, by the columns of the CH record before
    them (each section may name its own); header, footer and summary records are no
    rows. The first record must be RH (or FH: a report split over several files)."""
    columns: _Columns | None = None
    header: list[str] = []
    first = True
    for line, record in readers.csv_records(stream):
        record_type = record[0].strip().upper()
        if first and record_type not in ("RH", "FH"):
            raise InvalidInput(
                f"line {line}: not a PayPal settlement report (it starts with an RH or FH record)"
            )
        first = False
        if record_type == "CH":
            header = readers.header_names(record, line)
            columns = _Columns(header, line)
            whose = f"the {PAYPAL} preset"
            wanted = [(column, whose) for column in _PAYPAL_REQUIRED]
            if target.mapped and target.column is not None:
                wanted.append((target.column, f"--map {_mapped_field(target)}={target.column}"))
            else:
                wanted.append(
                    (PAYPAL_TARGET, f"{whose}'s target; --map target=COLUMN names another")
                )
            columns.require(wanted)
            continue
        if record_type != "SB":
            if record_type not in _STL_RECORDS:
                yield SettlementRow(
                    line=line,
                    kind=None,
                    row_type=_row_type(record_type),
                    error=f"record type {_row_type(record_type[:4])!r} is not one of a"
                    f" settlement report's ({', '.join(sorted(_STL_RECORDS))})",
                )
            continue
        if columns is None:
            raise InvalidInput(f"line {line}: an SB record before the CH record naming its columns")
        if len(record) > len(header):
            yield SettlementRow(
                line=line, kind=None, row_type="SB",
                error=f"{len(record)} fields, the CH record has {len(header)}",
            )  # fmt: skip
            continue
        fields = dict(zip(header, record, strict=False))
        yield _paypal_row(columns, fields, line, target)
    if first:
        raise InvalidInput("line 1: the file is empty (a PayPal settlement report starts with RH)")


def _paypal_row(
    columns: _Columns, fields: Mapping[str, Any], line: int, target: _Target
) -> SettlementRow:
    code = str(columns.text(fields, "Transaction Event Code") or "").upper()
    row_type = _row_type(code)
    found = _T_CODE.fullmatch(code)
    direction = str(columns.text(fields, "Transaction Debit or Credit") or "").upper()
    kind: Kind | None = None
    fault: str | None = None
    if found is None:
        fault = "Transaction Event Code: must be a T-code (T and four digits)"
    elif found.group(1) == "00":
        if direction == "DR":
            return _skipped(line, row_type, "payment_sent")
        kind = "payment"
    elif code in _PAYPAL_REVERSALS:
        kind = "reversal"
    elif code in _PAYPAL_REINSTATING:
        kind = "reinstating"
    elif code in _PAYPAL_HOLDS:
        return _skipped(line, row_type, "hold")
    else:
        return _skipped(line, row_type, _PAYPAL_GROUPS.get(found.group(1), "other"))
    draft = _Draft(line, kind, row_type)
    draft.labels = {
        "reference": "Transaction ID",
        "original_reference": "PayPal Reference ID",
        "currency": "Gross Transaction Currency",
        "amount": "Gross Transaction Amount",
    }

    def fill(draft: _Draft) -> None:
        if fault is not None:
            raise InvalidInput(fault)
        expected = "DR" if kind == "reversal" else "CR"
        draft.reference = _identifier(columns.text(fields, "Transaction ID"), "Transaction ID")
        if kind != "payment":
            draft.original_reference = _identifier(
                columns.text(fields, "PayPal Reference ID"), "PayPal Reference ID"
            )
        if direction != expected:
            raise InvalidInput(f"Transaction Debit or Credit: must be {expected} for {code}")
        draft.target, draft.labels["target"] = _target_of(columns, fields, PAYPAL_TARGET, target)
        draft.target_kind = target.kind
        draft.amount = _minor_units(columns.text(fields, "Gross Transaction Amount"))
        draft.currency = _currency(
            columns.text(fields, "Gross Transaction Currency"), "Gross Transaction Currency"
        )
        draft.occurred_at = _paypal_time(columns.text(fields, "Transaction Initiation Date"))

    return _build(draft, fill)


def _minor_units(raw: Any) -> Decimal:
    """PayPal's unsigned amount in minor units (``1000`` is 10.00)."""
    label = "Gross Transaction Amount"
    text = text_field(raw, label, 20)
    if text is None or not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"{label}: must be a whole number of minor units (1000 is 10.00)")
    amount = (Decimal(int(text)) / 100).quantize(CENT)
    if amount <= 0:
        raise InvalidInput(f"{label}: must be greater than 0")
    if amount > MAX_AMOUNT:
        raise InvalidInput(f"{label}: must be at most {MAX_AMOUNT}")
    return amount


def _paypal_time(raw: Any) -> datetime:
    label = "Transaction Initiation Date"
    found = _PAYPAL_TIME.fullmatch(text_field(raw, label, 40) or "")
    if found is None:
        raise InvalidInput(f"{label}: must be written YYYY/MM/DD HH:MM:SS ±HHMM")
    year, month, day, hour, minute, second, sign, off_hours, off_minutes = found.groups()
    offset = timedelta(hours=int(off_hours), minutes=int(off_minutes))
    try:
        zone = timezone(-offset if sign == "-" else offset)
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError:
        raise InvalidInput(f"{label}: not a calendar date and time") from None
    return _in_utc(moment, label)


# --- our own fields under other names (--map without a preset) ----------------------------


def _read_custom(
    stream: IO[bytes], fmt: Format, mapping: Mapping[str, str]
) -> Iterator[SettlementRow]:
    """Our own fields (``MAP_FIELDS``), each under its ``--map`` column or its own name.
    In a CSV file every mapped column, the reference's and the amount's must be in the
    header (exit 65), and one of the target's."""
    columns_of = {name: mapping.get(name, name) for name in MAP_FIELDS}
    if "target" in mapping:  # the target's column names who paid; the others stay unread
        columns_of["user_id"] = columns_of["installment_id"] = ""
    found: list[_Columns] = []

    def check(header: list[str], line: int) -> None:
        columns = _Columns(header, line)
        wanted = [(column, f"--map {name}={column}") for name, column in mapping.items()]
        for name in ("reference", "amount"):
            if name not in mapping:
                wanted.append((name, "a payments file's"))
        columns.require(wanted)
        if not any(columns.has(columns_of[name]) for name in TARGET_FIELDS if columns_of[name]):
            raise InvalidInput(
                f"line {line}: missing column(s): user_id or installment_id (who paid;"
                " --map user_id=COLUMN names another)"
            )
        found.append(columns)

    for raw in readers.read_rows(stream, fmt, on_header=check if fmt == "csv" else None):
        columns = found[0] if found else _Columns(list(raw.fields), 0)
        if raw.error is not None:
            reference = _lenient_id(columns.text(raw.fields, columns_of["reference"]))
            yield SettlementRow(
                line=raw.line, kind=None, row_type="", reference=reference, error=raw.error
            )
            continue
        yield _custom_row(columns, raw.fields, raw.line, columns_of, mapping)


def _lenient_id(raw: Any) -> str | None:
    try:
        return id_field(raw, "reference")
    except InvalidInput:
        return None


def _custom_row(
    columns: _Columns,
    fields: Mapping[str, Any],
    line: int,
    columns_of: Mapping[str, str],
    mapping: Mapping[str, str],
) -> SettlementRow:
    def label(name: str) -> str:
        return f"{name} (column {printable(mapping[name])})" if name in mapping else name

    def value(name: str) -> Any:
        return columns.text(fields, columns_of[name]) if columns_of[name] else None

    raw_kind = value("kind")
    kind_text = "payment" if raw_kind is None else str(raw_kind).strip().lower()
    kind: Kind | None = kind_text if kind_text in ("payment", "reversal") else None  # type: ignore[assignment]
    draft = _Draft(line, kind, kind_text if kind else _row_type(raw_kind))
    draft.labels = {name: label(name) for name in MAP_FIELDS}

    def fill(draft: _Draft) -> None:
        draft.reference = _identifier(value("reference"), label("reference"))
        if kind is None:
            raise InvalidInput(f"{label('kind')}: must be payment or reversal")
        draft.original_reference = _identifier(
            value("original_reference"), label("original_reference")
        )
        named = [
            (name, _identifier(value(name), label(name)))
            for name in TARGET_FIELDS
            if columns_of[name]
        ]
        given = [(name, text) for name, text in named if text is not None]
        if len(given) > 1:
            raise InvalidInput(f"{' and '.join(label(name) for name, _ in given)}: give one")
        if given:
            name, draft.target = given[0]
            draft.target_kind = _TARGET_KINDS[name]
        draft.labels["target"] = "user_id or installment_id"
        draft.amount = _major_units(value("amount"), label("amount"))
        currency = value("currency")
        draft.currency = _currency(currency, label("currency")) if currency is not None else None
        draft.occurred_at = timestamp(value("paid_at"), label("paid_at"))

    return _build(draft, fill, currency_required=False)
