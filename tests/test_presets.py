"""The processors' settlement reports read by their presets, and ``--map`` (issue 26,
section 2): exact normalized rows from files laid out as each processor writes them,
each quirk, the file faults (exit 65) and the usage faults (exit 2)."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnplctl.errors import ExitCode, InvalidInput, UsageProblem
from bnplctl.importing import readers
from bnplctl.importing.presets import (
    ADYEN,
    PAYPAL,
    STRIPE,
    Kind,
    SettlementRow,
    _adyen_amount,
    _Columns,
    _stripe_amount,
    parse_column_map,
    read_settlement,
    settlement_reader,
    zone_named,
)

pytestmark = pytest.mark.usefixtures("no_database")

DATA = Path(__file__).resolve().parent / "data" / "processors"
ADYEN_118 = DATA / "adyen_settlement_detail_report_batch_118.csv"
ADYEN_119 = DATA / "adyen_settlement_detail_report_batch_119.csv"
STRIPE_FILE = DATA / "stripe_payout_reconciliation_itemized_5.csv"
PAYPAL_FILE = DATA / "STL-20260615.01.009.CSV"


def _read(content: bytes, preset: str | None, **options: Any) -> list[SettlementRow]:
    return list(read_settlement(io.BytesIO(content), preset=preset, **options))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _money(
    line: int,
    kind: str,
    row_type: str,
    reference: str,
    target: str,
    amount: str,
    currency: str,
    at: str,
    original: str | None = None,
) -> SettlementRow:
    return SettlementRow(
        line=line,
        kind=kind,  # type: ignore[arg-type]
        row_type=row_type,
        reference=reference,
        original_reference=original,
        target=target,
        amount=Decimal(amount),
        currency=currency,
        occurred_at=_utc(at),
    )


def _skip(line: int, row_type: str, reason: str) -> SettlementRow:
    return SettlementRow(line=line, kind="skipped", row_type=row_type, skip_reason=reason)


# --- each preset on its processor's file -------------------------------------------------

ADYEN_118_ROWS = [
    # 01:30 CET and 03:30 CEST on the night summer time starts: an hour apart in UTC.
    _money(2, "payment", "Settled", "8816178952203412", "usr-001", "166.67", "EUR",
           "2026-03-29 00:30"),
    _money(3, "payment", "Settled", "8816178952204420", "usr-002", "120.50", "EUR",
           "2026-03-29 01:30"),
    # PDT, and a merchant reference that reads as a number in scientific notation.
    _money(4, "payment", "Settled", "8816178952205538", "2.02E+11", "50.00", "EUR",
           "2026-06-15 16:15"),
    # An IANA zone name (Amsterdam in summer: UTC+2).
    _money(5, "payment", "Settled", "8816178952206646", "usr-004", "75.25", "EUR",
           "2026-06-15 08:00"),
    _money(6, "reversal", "Refunded", "8836178952207701", "usr-001", "40.00", "EUR",
           "2026-06-16 09:00", original="8816178952203412"),
    _money(7, "reversal", "Chargeback", "8846178952207802", "usr-002", "120.50", "EUR",
           "2026-06-16 10:00", original="8816178952204420"),
    _money(8, "reinstating", "ChargebackReversed", "8856178952207903", "usr-002", "120.50",
           "EUR", "2026-06-17 10:00", original="8816178952204420"),
    _money(9, "reversal", "SecondChargeback", "8866178952208004", "usr-004", "75.25", "EUR",
           "2026-06-18 06:00", original="8816178952206646"),
    _money(10, "reinstating", "RefundedReversed", "8876178952208105", "usr-001", "40.00",
           "EUR", "2026-06-18 07:00", original="8816178952203412"),
    _skip(11, "Fee", "fee"),
    _skip(12, "InvoiceDeduction", "invoice_deduction"),
    _skip(13, "MerchantPayout", "payout"),
    _skip(14, "Balancetransfer", "transfer"),
]  # fmt: skip


def test_adyen_settlement_details_report() -> None:
    assert _read(ADYEN_118.read_bytes(), ADYEN) == ADYEN_118_ROWS


def test_adyen_later_report_quoted_header_moved_and_appended_columns() -> None:
    """Batch 119 as Adyen writes later reports: a quoted header, ``Batch Number`` moved
    to the front, ``Booking Date`` appended, empty fields quoted; and 02:30 twice on the
    night summer time ends, told apart by CEST and CET."""
    assert _read(ADYEN_119.read_bytes(), ADYEN) == [
        _money(2, "payment", "Settled", "8816178952301010", "usr-005", "99.99", "EUR",
               "2026-10-25 00:30"),
        _money(3, "payment", "Settled", "8816178952301128", "usr-006", "10.00", "EUR",
               "2026-10-25 01:30"),
        _money(4, "reversal", "Refunded", "8836178952301236", "usr-005", "9.99", "EUR",
               "2026-10-27 09:00", original="8816178952301010"),
        _skip(5, "Fee", "fee"),
        _skip(6, "MerchantPayout", "payout"),
    ]  # fmt: skip


STRIPE_ROWS = [
    _money(2, "payment", "charge", "ch_3QwZ1aBcDeFg0001", "usr-001", "166.67", "USD",
           "2026-05-01 09:12:44"),
    _money(3, "payment", "charge", "ch_3QwZ1aBcDeFg0002", "usr-002", "120.50", "USD",
           "2026-05-01 10:00"),
    # Written USD here, usd elsewhere; the target reads as scientific notation.
    _money(4, "payment", "charge", "ch_3QwZ1aBcDeFg0003", "7.1E+08", "50.00", "USD",
           "2026-05-01 11:30:15"),
    _money(5, "payment", "charge", "ch_3QwZ1aBcDeFg0004", "usr-004", "75.25", "USD",
           "2026-05-02 08:00"),
    # Negative in the report, positive here.
    _money(6, "reversal", "refund", "re_3QwZ1aBcDeFg0005", "usr-001", "40.00", "USD",
           "2026-05-02 12:00", original="ch_3QwZ1aBcDeFg0001"),
    _money(7, "reversal", "dispute", "dp_1QwZ1aBcDeFg0006", "usr-002", "120.50", "USD",
           "2026-05-02 13:00", original="ch_3QwZ1aBcDeFg0002"),
    # A dispute's reversal shares the dispute's source_id: its own id is its balance
    # transaction's.
    _money(8, "reinstating", "dispute_reversal", "txn_3QwZ1aBcDeFg0007", "usr-002", "120.50",
           "USD", "2026-05-03 09:00", original="ch_3QwZ1aBcDeFg0002"),
    _money(9, "reinstating", "refund_failure", "txn_3QwZ1aBcDeFg0008", "usr-001", "40.00",
           "USD", "2026-05-03 10:00", original="ch_3QwZ1aBcDeFg0001"),
    _skip(10, "fee", "fee"),
    _skip(11, "other_adjustment", "adjustment"),
    _skip(12, "transfer", "transfer"),
    _skip(13, "payout", "payout"),
]  # fmt: skip


def test_stripe_payout_reconciliation_report() -> None:
    assert _read(STRIPE_FILE.read_bytes(), STRIPE) == STRIPE_ROWS


PAYPAL_ROWS = [
    # PDT (-0700) in the report, UTC here; the RH, FH, SH and CH records are no rows.
    _money(5, "payment", "T0006", "1FW12345BN123456C", "usr-001", "166.67", "USD",
           "2026-06-15 16:15"),
    _money(6, "payment", "T0007", "2GX23456CO234567D", "usr-002", "120.50", "USD",
           "2026-06-15 17:00"),
    _money(7, "payment", "T0006", "3HY34567DP345678E", "7.1E+08", "50.00", "USD",
           "2026-06-15 18:30:15"),
    _money(8, "payment", "T0011", "4JZ45678EQ456789F", "usr-004", "75.25", "USD",
           "2026-06-15 19:00"),
    _money(9, "reversal", "T1107", "5KA56789FR567890G", "usr-001", "40.00", "USD",
           "2026-06-15 20:00", original="1FW12345BN123456C"),
    _money(10, "reversal", "T1201", "6LB67890GS678901H", "usr-002", "120.50", "USD",
           "2026-06-15 21:00", original="2GX23456CO234567D"),
    _money(11, "reinstating", "T1202", "7MC78901HT789012J", "usr-002", "120.50", "USD",
           "2026-06-15 22:00", original="2GX23456CO234567D"),
    _money(12, "reversal", "T1106", "8ND89012JU890123K", "usr-004", "75.25", "USD",
           "2026-06-15 23:00", original="4JZ45678EQ456789F"),
    _skip(13, "T0400", "payout"),
    _skip(14, "T0106", "fee"),
    _skip(15, "T0000", "payment_sent"),
    _skip(16, "T1110", "hold"),
]  # fmt: skip


def test_paypal_settlement_report() -> None:
    """The SB records only, by the CH record's columns (``Transaction  Debit or Credit``
    spelt with two spaces, as PayPal's spec once did), with the file's line numbers; the
    footers (SF, SC, RF, RC, FF) are neither rows nor errors."""
    assert _read(PAYPAL_FILE.read_bytes(), PAYPAL) == PAYPAL_ROWS


def test_skipped_rows_keep_why_and_nothing_else() -> None:
    for path, preset in ((ADYEN_118, ADYEN), (STRIPE_FILE, STRIPE), (PAYPAL_FILE, PAYPAL)):
        skipped = [row for row in _read(path.read_bytes(), preset) if row.kind == "skipped"]
        assert skipped
        for row in skipped:
            assert row.skip_reason and row.row_type and row.error is None
            assert (row.reference, row.target, row.amount, row.currency) == (None,) * 4


# --- the quirks ---------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("path", "preset"), [(ADYEN_118, ADYEN), (STRIPE_FILE, STRIPE), (PAYPAL_FILE, PAYPAL)]
)
def test_a_byte_order_mark_or_none_reads_the_same(path: Path, preset: str) -> None:
    content = path.read_bytes().removeprefix(BOM)
    assert _read(BOM + content, preset) == _read(content, preset)


def _rewritten(
    content: bytes, order: list[int] | None, extra: dict[str, str], quoted: bool
) -> bytes:
    """A CSV report with its columns in ``order`` (indexes; None: as they are), ``extra``
    columns appended, every field quoted or none."""
    records = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL)
    for number, record in enumerate(records):
        picked = [record[index] for index in order] if order else record
        writer.writerow(picked + (list(extra) if number == 0 else list(extra.values())))
    return out.getvalue().encode()


@pytest.mark.parametrize(("path", "preset"), [(ADYEN_118, ADYEN), (STRIPE_FILE, STRIPE)])
def test_columns_in_another_order_with_more_appended_quoted_or_not(path: Path, preset: str) -> None:
    expected = _read(path.read_bytes(), preset)
    width = len(next(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))))
    reordered = list(reversed(range(width)))
    extra = {"Booking Date": "2026-07-02 10:00:00", "Booking Date TimeZone": "CET"}
    for quoted in (False, True):
        assert _read(_rewritten(path.read_bytes(), None, {}, quoted), preset) == expected
        assert _read(_rewritten(path.read_bytes(), reordered, extra, quoted), preset) == expected


ADYEN_HEADER = (
    "Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,"
    "Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),"
    "Gross Credit (GC),Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),Batch Number"
)


def _adyen(*rows: str) -> bytes:
    return (ADYEN_HEADER + "\n" + "\n".join(rows) + "\n").encode()


def test_references_in_scientific_notation_stay_text() -> None:
    rows = _read(
        _adyen(
            "Co,Shop,8.81617895E+15,1E+5,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,10.00,1,"
            "EUR,,9.80,7",
            "Co,Shop,8.81617895E+15,1E+5,visa,2026-06-02 10:00:00,UTC,Refunded,8.8E+15,EUR,"
            "10.00,,1,EUR,10.00,,7",
        ),
        ADYEN,
    )
    assert [(row.reference, row.original_reference, row.target) for row in rows] == [
        ("8.81617895E+15", None, "1E+5"),
        ("8.8E+15", "8.81617895E+15", "1E+5"),
    ]


def test_quoted_empty_fields_are_empty() -> None:
    [row] = _read(
        _adyen('"Co","Shop","8816178952203412","usr-1","visa","2026-06-01 10:00:00","UTC",'
               '"Settled","","EUR","","10.00","1","EUR","","9.80",""'),
        ADYEN,
    )  # fmt: skip
    assert (row.error, row.amount, row.reference) == (None, Decimal("10.00"), "8816178952203412")


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "preset", "column"),
    [
        (ADYEN_118, ADYEN, "Gross Credit (GC)"),
        (ADYEN_118, ADYEN, "TimeZone"),
        (ADYEN_118, ADYEN, "Merchant Reference"),
        (STRIPE_FILE, STRIPE, "reporting_category"),
        (STRIPE_FILE, STRIPE, "payment_metadata[bnpl_reference]"),
        (PAYPAL_FILE, PAYPAL, "Gross Transaction Amount"),
        (PAYPAL_FILE, PAYPAL, "Invoice ID"),
    ],
)
def test_a_missing_column_stops_the_file_naming_it_and_the_preset(
    path: Path, preset: str, column: str
) -> None:
    content = path.read_bytes().replace(column.encode(), b"Something Else", 1)
    with pytest.raises(InvalidInput) as caught:
        _read(content, preset)
    assert caught.value.exit_code == ExitCode.INVALID_INPUT
    assert int(caught.value.exit_code) == 65
    assert column in caught.value.message and preset in caught.value.message
    assert caught.value.message.startswith("line 4:" if preset == PAYPAL else "line 1:")


def test_stripe_needs_a_time_column() -> None:
    content = STRIPE_FILE.read_bytes().replace(b"created_utc,created,", b"when_utc,when,", 1)
    with pytest.raises(InvalidInput, match=r"line 1: missing column\(s\): created_utc or created"):
        _read(content, STRIPE)


def test_stripe_created_utc_wins_over_created() -> None:
    header = (
        "balance_transaction_id,created,created_utc,currency,gross,reporting_category,"
        "source_id,charge_id,payment_metadata[bnpl_reference]"
    )
    row = "txn_1,2026-05-01 04:00:00,2026-05-01 09:00:00,usd,10.00,charge,ch_1,ch_1,usr-1"
    [read] = _read(f"{header}\n{row}\n".encode(), STRIPE)
    assert read.occurred_at == _utc("2026-05-01 09:00")


CARD = "4111111111111111"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,10.005,1,EUR,,9.80,7",
         "Gross Credit (GC): at most 2 decimal places"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,1e3,1,EUR,,9.80,7",
         "Gross Credit (GC): must be a number"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,10.00,,1,EUR,,9.80,7",
         "Gross Credit (GC): required for this Type"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,10.00,10.00,1,EUR,,9.80,7",
         "Gross Debit (GC), Gross Credit (GC): exactly one must be filled"),
        ("Co,Shop,P1,usr-1,visa,01/06/2026 10:00,UTC,Settled,,EUR,,10.00,1,EUR,,9.80,7",
         "Creation Date: must be a time written YYYY-MM-DD HH:MM:SS"),
        ("Co,Shop,P1,usr-1,visa,2026-02-30 10:00:00,UTC,Settled,,EUR,,10.00,1,EUR,,9.80,7",
         "Creation Date: not a calendar date"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,Mars/Olympus,Settled,,EUR,,10.00,1,EUR,,9.80,7",
         "TimeZone: 'Mars/Olympus' is not a time zone"),
        ("Co,Shop,P1,usr-1,visa,1999-06-01 10:00:00,UTC,Settled,,EUR,,10.00,1,EUR,,9.80,7",
         "Creation Date: must be from 2000-01-01"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EURO,,10.00,1,EUR,,9.80,7",
         "Gross Currency: must be a three-letter ISO 4217 code"),
        ("Co,Shop,P1,,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,10.00,1,EUR,,9.80,7",
         "Merchant Reference: required (who paid)"),
        ("Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Refunded,,EUR,10.00,,1,EUR,,9.80,7",
         "Modification Reference: required"),
        (f"Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled{CARD},,EUR,,10.00,1,EUR,,9.80,7",
         "Type: '<withheld>' is not a type the adyen-settlement preset reads"),
        (f"Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,{CARD},1,EUR,,9.80,7",
         "Gross Credit (GC): must be at most"),
    ],
)  # fmt: skip
def test_a_row_that_cannot_be_read_is_an_error_row_never_an_exception(
    row: str, message: str
) -> None:
    [read] = _read(_adyen(row), ADYEN)
    assert read.error is not None and read.error.startswith(message), read.error
    if "is not a type" in message:
        assert (read.kind, read.reference) == (None, "P1")
    assert CARD not in read.error and CARD not in read.row_type
    assert (read.amount, read.target, read.occurred_at) == (None, None, None)
    if "Psp Reference" not in read.error and read.kind == "payment":
        assert read.reference == "P1"  # named in the rejects file by its reference


@pytest.mark.parametrize(
    ("category", "gross", "message"),
    [
        ("refund", "40.00", "gross: must be negative for this reporting_category"),
        ("charge", "-40.00", "gross: must be positive for this reporting_category"),
        ("charge", "40,00", "gross: must be a number"),
        ("charge_failure", "-40.00", "reporting_category: 'charge_failure' is not a category"),
    ],
)
def test_stripe_signs_and_unknown_categories(category: str, gross: str, message: str) -> None:
    header = (
        "balance_transaction_id,created_utc,currency,gross,reporting_category,source_id,"
        "charge_id,payment_metadata[bnpl_reference]"
    )
    row = f'txn_1,2026-05-01 09:00:00,usd,"{gross}",{category},re_1,ch_1,usr-1'
    [read] = _read(f"{header}\n{row}\n".encode(), STRIPE)
    assert read.error is not None and read.error.startswith(message), read.error


def _stl(*records: str) -> bytes:
    head = [
        '"RH",2026/06/16 04:07:29 -0700,"A","B5XRKJHT6QEXQ",009,',
        '"FH",01',
        '"SH",2026/06/15 00:00:00 -0700,2026/06/15 23:59:59 -0700,"","B5XRKJHT6QEXQ",""',
    ]
    return ("\n".join(head + list(records)) + "\n").encode()


PAYPAL_CH = (
    '"CH","Transaction ID","Invoice ID","PayPal Reference ID","PayPal Reference ID Type",'
    '"Transaction Event Code","Transaction Initiation Date","Transaction Completion Date",'
    '"Transaction Debit or Credit","Gross Transaction Amount","Gross Transaction Currency"'
)


def _sb(code: str, direction: str, amount: str, at: str = "2026/06/15 09:15:00 -0700") -> str:
    return f'"SB","TX1","usr-1","TX0","TXN","{code}",{at},{at},"{direction}",{amount},"USD"'


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_sb("T1107", "CR", "4000"), "Transaction Debit or Credit: must be DR for T1107"),
        (_sb("T1202", "DR", "4000"), "Transaction Debit or Credit: must be CR for T1202"),
        (_sb("T0006", "CR", "40.00"), "Gross Transaction Amount: must be a whole number"),
        (_sb("T0006", "CR", "0"), "Gross Transaction Amount: must be greater than 0"),
        (
            _sb("T0006", "CR", "100", "2026-06-15 09:15:00"),
            "Transaction Initiation Date: must be written",
        ),
        (_sb("X0006", "CR", "100"), "Transaction Event Code: must be a T-code"),
    ],
)
def test_paypal_row_errors(record: str, message: str) -> None:
    [read] = _read(_stl(PAYPAL_CH, record), PAYPAL)
    assert read.error is not None and read.error.startswith(message), read.error
    assert read.line == 5


def test_paypal_records_that_are_not_rows_and_those_that_stop_the_file() -> None:
    rows = _read(
        _stl(PAYPAL_CH, '"ZZ",1', _sb("T0006", "CR", "100") + ',"x","y"', '"SC",0'), PAYPAL
    )
    assert [(row.line, row.error) for row in rows] == [
        (5, "record type 'ZZ' is not one of a settlement report's"
            " (CH, FF, FH, RC, RF, RH, SB, SC, SF, SH)"),
        (6, "13 fields, the CH record has 11"),
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match="line 4: an SB record before the CH record"):
        _read(_stl(_sb("T0006", "CR", "100")), PAYPAL)
    with pytest.raises(InvalidInput, match="line 1: not a PayPal settlement report"):
        _read(ADYEN_118.read_bytes(), PAYPAL)
    with pytest.raises(InvalidInput, match="line 1: the file is empty"):
        _read(b"\n\n", PAYPAL)
    # A report of a day without activity has no CH record at all: no rows, no fault.
    assert _read(_stl('"SF","USD",0,0', '"SC",0', '"FF",5'), PAYPAL) == []


def test_a_record_over_the_limit_stops_the_file_naming_its_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 400)
    long = '"SB","TX1","' + "x" * 500 + '","","","T0006",2026/06/15 09:15:00 -0700'
    with pytest.raises(InvalidInput, match="line 5: longer than the limit of 400 bytes"):
        _read(_stl(PAYPAL_CH, long), PAYPAL)


class _EndlessReport(io.RawIOBase):
    """A settlement report that never ends: reading one must not need its end."""

    def __init__(self, head: bytes, record: bytes) -> None:
        super().__init__()
        self._pending = head
        self._record = record

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self._pending) < len(buffer):
            self._pending += self._record
        buffer[:] = self._pending[: len(buffer)]
        self._pending = self._pending[len(buffer) :]
        return len(buffer)


@pytest.mark.parametrize("preset", [ADYEN, PAYPAL])
def test_rows_are_streamed(preset: str) -> None:
    if preset == ADYEN:
        head = _adyen()
        record = (
            b"Co,Shop,P1,usr-1,visa,2026-06-01 10:00:00,UTC,Settled,,EUR,,10.00,1,EUR,,9.80,7\n"
        )
    else:
        head, record = _stl(PAYPAL_CH), (_sb("T0006", "CR", "1000") + "\n").encode()
    stream = io.BufferedReader(_EndlessReport(head, record))
    rows = list(itertools.islice(read_settlement(stream, preset=preset), 3))
    assert [row.amount for row in rows] == [Decimal("10.00")] * 3


def test_presets_read_csv_only_and_names_are_checked() -> None:
    with pytest.raises(UsageProblem) as caught:
        settlement_reader("worldpay")
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageProblem, match="reads the processor's CSV report"):
        settlement_reader(ADYEN)(io.BytesIO(b"[]"), "json")


# --- amounts: never a float, never more than two places ------------------------------------


@given(
    text=st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,4})?", fullmatch=True),
        st.text(max_size=12),
    )
)
def test_amounts_are_decimals_with_two_places_or_errors(text: str) -> None:
    """Whatever a Stripe ``gross`` or an Adyen gross column holds, the amount read is a
    positive ``Decimal`` with exactly two places, or the row is refused."""
    header = ["gross debit (gc)", "gross credit (gc)"]
    sign: Kind = "reversal" if text.strip().startswith("-") else "payment"

    def stripe() -> Decimal:
        return _stripe_amount(text, sign)

    def adyen() -> Decimal:
        return _adyen_amount(_Columns(header, 1), {"gross credit (gc)": text}, "payment")

    for read in (stripe, adyen):
        try:
            amount = read()
        except InvalidInput:
            continue
        assert type(amount) is Decimal and not isinstance(amount, float)
        assert amount.as_tuple().exponent == -2 and amount > 0
        assert amount == Decimal(text.strip().lstrip("+-"))


# --- time zones ---------------------------------------------------------------------------


def test_zones_by_abbreviation_offset_or_iana_name() -> None:
    winter = datetime(2026, 1, 15, 12, 0)
    summer = datetime(2026, 7, 15, 12, 0)
    for name, offset in [("CET", 1), ("CEST", 2), ("PST", -8), ("PDT", -7), ("GMT", 0),
                         ("cest", 2), ("UTC+05:30", 5.5), ("+0100", 1), ("GMT-3", -3)]:  # fmt: skip
        zone = zone_named(name)
        assert zone is not None
        # An abbreviation is a fixed offset: CET stays +1 in July.
        assert summer.replace(tzinfo=zone).utcoffset() == timedelta(hours=offset)
    amsterdam = zone_named("Europe/Amsterdam")
    assert amsterdam is not None
    assert winter.replace(tzinfo=amsterdam).utcoffset() == timedelta(hours=1)
    assert summer.replace(tzinfo=amsterdam).utcoffset() == timedelta(hours=2)
    for unknown in ("Mars/Olympus", "XYZ", "../../etc/passwd", "UTC+25", ""):
        assert zone_named(unknown) is None
    assert zone_named("EST") == timezone(timedelta(hours=-5), "EST")


# --- --map ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "preset", "message"),
    [
        (["amount"], None, "--map: expected FIELD=COLUMN"),
        (["=Betrag"], None, "--map: expected FIELD=COLUMN"),
        (["price=Betrag"], None, "--map: unknown field 'price' (fields: reference, user_id"),
        (["amount=A", "Amount=B"], None, "--map: the field amount is given twice"),
        (["amount=Betrag"], ADYEN, "--map amount: with --preset adyen-settlement"),
        (["user_id=A", "installment_id=B"], STRIPE, "--map: user_id and installment_id"),
        (["target=A", "user_id=B"], None, "--map: target= or user_id="),
        (["amount=a\x1bb"], None, "--map amount: a column name of 1 to 200 printable"),
    ],
)
def test_map_options_are_checked(options: list[str], preset: str | None, message: str) -> None:
    with pytest.raises(UsageProblem) as caught:
        parse_column_map(options, preset)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message.startswith(message), caught.value.message


def test_map_reads_a_custom_layout_into_the_same_rows() -> None:
    content = (
        "Buchung;x,Kunde,Betrag,Zeit,Art,Bezug,Währung\n"
        "B-1,usr-001,166.67,2026-05-01T09:12:44Z,payment,,EUR\n"
        "B-2,usr-001,40,2026-05-02T12:00:00+02:00,Reversal,B-1,eur\n"
        "B-3,usr-002,10.001,2026-05-02T12:00:00Z,payment,,EUR\n"
        "B-4,usr-002,10.00,,refund,,EUR\n"
        "B-5,,10.00,,,,\n"
        'B-6,usr-002,10.00,,"pay\x1bment",,\n'
    ).encode()
    mapping = parse_column_map(
        ["reference=Buchung;x", "user_id=Kunde", "amount=Betrag", "paid_at=Zeit", "kind=Art",
         "original_reference=Bezug", "currency=Währung"]
    )  # fmt: skip
    rows = _read(content, None, column_map=mapping)
    assert rows[:2] == [
        SettlementRow(2, "payment", "payment", "B-1", None, "usr-001", "user",
                      Decimal("166.67"), "EUR", _utc("2026-05-01 09:12:44")),
        SettlementRow(3, "reversal", "reversal", "B-2", "B-1", "usr-001", "user",
                      Decimal("40.00"), "EUR", _utc("2026-05-02 10:00")),
    ]  # fmt: skip
    assert [(row.line, row.reference, row.error) for row in rows[2:]] == [
        (4, "B-3", "amount (column Betrag): at most 2 decimal places"),
        (5, "B-4", "kind (column Art): must be payment or reversal"),
        (6, "B-5", "user_id or installment_id: required (who paid)"),
        (7, "B-6", "kind (column Art): must be payment or reversal"),
    ]
    assert rows[-1].row_type == "pay\\x1bment"


def test_map_checks_the_header_for_its_columns() -> None:
    mapping = parse_column_map(["amount=Betrag"])
    with pytest.raises(
        InvalidInput, match=r"line 1: missing column\(s\): Betrag \(--map amount=Betrag\)"
    ):
        _read(b"reference,amount,user_id\nR1,10.00,usr-1\n", None, column_map=mapping)
    with pytest.raises(InvalidInput, match="user_id or installment_id"):
        _read(b"reference,amount\nR1,10.00\n", None)


def test_our_own_layout_needs_no_map_and_json_works_too() -> None:
    [csv_row] = _read(b"reference,amount,installment_id\nR1,10.00,7\n", None)
    assert (csv_row.target, csv_row.target_kind, csv_row.kind) == ("7", "installment", "payment")
    rows = _read(b'{"Ref": "R1", "amount": 10, "user_id": "usr-1"}\n{"amount": "x"}\n', None,
                 column_map={"reference": "ref"}, fmt="jsonl")  # fmt: skip
    assert (rows[0].reference, rows[0].amount, rows[0].target) == ("R1", Decimal("10.00"), "usr-1")
    assert rows[1].error is not None


def test_map_target_overrides_a_presets_target_column() -> None:
    content = STRIPE_FILE.read_bytes().replace(
        b"payment_metadata[bnpl_reference]", b"metadata[order]"
    )
    with pytest.raises(InvalidInput, match=r"payment_metadata\[bnpl_reference\]"):
        _read(content, STRIPE)
    rows = _read(content, STRIPE, column_map=parse_column_map(["target=metadata[order]"], STRIPE))
    assert rows == STRIPE_ROWS
    rows = _read(
        content, STRIPE, column_map=parse_column_map(["installment_id=Metadata[Order]"], STRIPE)
    )
    assert {row.target_kind for row in rows if row.kind != "skipped"} == {"installment"}
    with pytest.raises(InvalidInput, match=r"missing column\(s\): Nope \(--map target=Nope\)"):
        _read(content, STRIPE, column_map={"target": "Nope"})


# --- into rule 10's pipeline ----------------------------------------------------------------


def test_payment_rows_become_rows_of_our_payments_layout() -> None:
    """A report's rows as ``payments import`` stages them (``PAYMENT_ROW_COLUMNS``): a
    payment to its target (a user, or an installment), an error row refused with its
    reference and error, a reversal with its payment's reference and row type."""
    from bnplctl.importing.payments import parse_settlement_chunk

    rows = _read(PAYPAL_FILE.read_bytes(), PAYPAL)
    failed = SettlementRow(3, "payment", "Settled", "R9", error="amount: bad")
    chunk = parse_settlement_chunk([rows[0], failed, rows[4]], "user")
    payment, reversal = csv.reader(io.StringIO(chunk.copy_data))
    assert payment == [
        "0", "5", "1FW12345BN123456C", "166.67", "usr-001", "",
        _utc("2026-06-15 16:15").isoformat(), "", "", "",
    ]  # fmt: skip
    assert [(r.line, r.key, r.outcome, r.reason) for r in chunk.invalid] == [
        (3, "R9", "invalid", "amount: bad")
    ]
    assert reversal[2:6] == [rows[4].reference, str(rows[4].amount), "", ""]
    assert reversal[7:] == [rows[4].kind, rows[4].original_reference, rows[4].row_type]
    bought = SettlementRow(9, "payment", "x", "R", target="12", amount=Decimal("1.00"))
    (by_installment,) = csv.reader(
        io.StringIO(parse_settlement_chunk([bought], "installment").copy_data)
    )
    assert by_installment[4:6] == ["", "12"]
