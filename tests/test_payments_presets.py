"""``payments import --preset NAME``, ``--map FIELD=COLUMN`` and ``--target`` (issue 26,
sections 2 and 3): the processors' own reports imported end to end against a real
database, every row's outcome and the payments recorded.

The tests marked "rule 12" in their docstring need the lead's reversal SQL
(``services/payments.py``: ``stage_rows`` staging reversal and reinstating rows,
``AppliedChunk.reversed``); the others hold on payments and skipped rows alone.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.importing import payments as payments_import
from bnplctl.services import payments as payment_rules
from tests.conftest import TABLES, Cli, row_counts
from tests.helpers import terminated_on_second_call

DATA = Path(__file__).resolve().parent / "data" / "processors"
ADYEN_118 = DATA / "adyen_settlement_detail_report_batch_118.csv"
ADYEN_119 = DATA / "adyen_settlement_detail_report_batch_119.csv"
STRIPE_FILE = DATA / "stripe_payout_reconciliation_itemized_5.csv"
PAYPAL_FILE = DATA / "STL-20260615.01.009.CSV"

# Who pays in the fixtures: the targets the processors carry (two read as numbers in
# scientific notation, as a spreadsheet leaves them).
PAYERS = ("usr-001", "usr-002", "usr-004", "usr-005", "usr-006", "2.02E+11", "7.1E+08")


def _seed(engine: Engine, user_ids: tuple[str, ...] = PAYERS) -> None:
    """Each user with one plan of 300.00 in three installments of 100.00, due from
    2026-01-01 monthly (UPCOMING: no sweep runs)."""
    with engine.begin() as connection:
        for number, user_id in enumerate(user_ids, start=1):
            connection.execute(
                text(
                    "INSERT INTO users (user_id, full_name, phone_e164, passport_ciphertext,"
                    " passport_blind_index, passport_masked, card_brand, card_first6,"
                    " card_last4, card_fingerprint, date_of_birth)"
                    " VALUES (:u, 'User', '+998901234567', '\\x00', :idx, 'AA****', 'visa',"
                    " '411111', '1111', 'fp', '1990-01-01')"
                ),
                {"u": user_id, "idx": f"idx-{number}"},
            )
            plan_id = connection.execute(
                text(
                    "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
                    " VALUES (:u, 300, 3, '2025-12-01') RETURNING id"
                ),
                {"u": user_id},
            ).scalar_one()
            connection.execute(
                text(
                    "INSERT INTO installments (plan_id, user_id, sequence, original_amount,"
                    " amount_due, due_date)"
                    " SELECT :p, :u, s, 100, 100, DATE '2026-01-01' + (s - 1) * 31"
                    " FROM generate_series(1, 3) AS s"
                ),
                {"p": plan_id, "u": user_id},
            )


def _payments(engine: Engine) -> dict[str, tuple[str, str, datetime]]:
    """reference -> (user_id, amount, paid_at) of every payment recorded."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT reference, user_id, amount::text, paid_at FROM payments")
        ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _due(engine: Engine, user_id: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT amount_due::text FROM installments WHERE user_id = :u ORDER BY sequence"
                ),
                {"u": user_id},
            ).scalars()
        )


def _reversals(engine: Engine) -> dict[str, tuple[str, str, str | None]]:
    """reversal reference -> (the payment's reference, amount, reason)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT r.reference, p.reference, r.amount::text, r.reason"
                " FROM payment_reversals r JOIN payments p ON p.id = r.payment_id"
            )
        ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _utc(moment: str) -> datetime:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


def _import(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("payments", "import", *args, "-o", "json")
    assert result.exit_code in (0, 5), (result.exit_code, result.stderr)
    summary: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, summary


def _counts(summary: dict[str, Any]) -> dict[str, int]:
    """The summary's non-zero counts per outcome."""
    return {name: summary[name] for name in payments_import.OUTCOMES if summary[name]}


def _not_applied(summary: dict[str, Any]) -> dict[int, str]:
    return {row["line"]: row["outcome"] for row in summary["rejected"]}


def _skipped(summary: dict[str, Any]) -> dict[int, str]:
    return {row["line"]: row["type"] for row in summary["skipped_rows"]}


def _keep(path: Path, tmp_path: Path, lines: set[int]) -> Path:
    """A copy of a fixture with only the records on ``lines`` (1-based) kept, as written
    (byte-order mark, quoting and line ends untouched): the rows after a record left out
    move up."""
    records = path.read_bytes().splitlines(keepends=True)
    kept = tmp_path / f"kept-{path.name}"
    kept.write_bytes(b"".join(record for n, record in enumerate(records, 1) if n in lines))
    return kept


# Records of each fixture that are no money (headers, footers) or payments, or skipped:
# the files the tests below can import before rule 12's reversals exist.
ADYEN_118_PAYMENTS = {1, 2, 3, 4, 5, 11, 12, 13, 14}
STRIPE_PAYMENTS = {1, 2, 3, 4, 5, 10, 11, 12, 13}
PAYPAL_PAYMENTS = {1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18, 19, 20, 21}


# --- the payments of each preset's report, and its skipped rows -----------------------


def test_adyen_payments_and_skipped_rows(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    """A BOM, an unquoted header, a PDT, a CEST and an IANA time zone, a merchant
    reference in scientific notation; fees, an invoice deduction, a payout and a balance
    transfer without a reference are skipped: counted, never rejected, exit 0."""
    _seed(engine)
    source = _keep(ADYEN_118, tmp_path, ADYEN_118_PAYMENTS)
    rejects = tmp_path / "rejects.csv"

    code, summary = _import(cli, str(source), "--preset", "adyen-settlement",
                            "--rejects", str(rejects))  # fmt: skip

    assert code == 0
    assert _counts(summary) == {"applied": 4, "skipped": 4}
    assert summary["rows"] == 8 and summary["rejected"] == []
    assert _skipped(summary) == {
        6: "Fee", 7: "InvoiceDeduction", 8: "MerchantPayout", 9: "Balancetransfer",
    }  # fmt: skip
    assert rejects.read_text().splitlines() == ["file,line,reference,outcome,reason"]
    assert _payments(engine) == {
        "8816178952203412": ("usr-001", "166.67", _utc("2026-03-29 00:30")),
        "8816178952204420": ("usr-002", "120.50", _utc("2026-03-29 01:30")),
        "8816178952205538": ("2.02E+11", "50.00", _utc("2026-06-15 16:15")),
        "8816178952206646": ("usr-004", "75.25", _utc("2026-06-15 08:00")),
    }
    assert _due(engine, "usr-001") == ["0.00", "33.33", "100.00"]
    assert _due(engine, "2.02E+11") == ["50.00", "100.00", "100.00"]


def test_adyen_later_report_quoted_reordered_appended(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Batch 119: a quoted header, ``Batch Number`` moved to the front, ``Booking Date``
    appended, quoted empty fields; 02:30 CEST and 02:30 CET an hour apart."""
    _seed(engine)
    source = _keep(ADYEN_119, tmp_path, {1, 2, 3, 5, 6})

    code, summary = _import(cli, str(source), "--preset", "adyen-settlement")

    assert code == 0
    assert _counts(summary) == {"applied": 2, "skipped": 2}
    assert _skipped(summary) == {4: "Fee", 5: "MerchantPayout"}
    assert _payments(engine) == {
        "8816178952301010": ("usr-005", "99.99", _utc("2026-10-25 00:30")),
        "8816178952301128": ("usr-006", "10.00", _utc("2026-10-25 01:30")),
    }


def test_stripe_payments_and_skipped_rows(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    """``usd`` and ``USD`` are one currency; ``gross`` in signed major units; the target
    from ``payment_metadata[bnpl_reference]``, one in scientific notation."""
    _seed(engine)
    source = _keep(STRIPE_FILE, tmp_path, STRIPE_PAYMENTS)

    code, summary = _import(cli, str(source), "--preset", "stripe-payouts")

    assert code == 0
    assert _counts(summary) == {"applied": 4, "skipped": 4}
    assert _skipped(summary) == {
        6: "fee", 7: "other_adjustment", 8: "transfer", 9: "payout",
    }  # fmt: skip
    assert _payments(engine) == {
        "ch_3QwZ1aBcDeFg0001": ("usr-001", "166.67", _utc("2026-05-01 09:12:44")),
        "ch_3QwZ1aBcDeFg0002": ("usr-002", "120.50", _utc("2026-05-01 10:00")),
        "ch_3QwZ1aBcDeFg0003": ("7.1E+08", "50.00", _utc("2026-05-01 11:30:15")),
        "ch_3QwZ1aBcDeFg0004": ("usr-004", "75.25", _utc("2026-05-02 08:00")),
    }


def test_paypal_payments_and_skipped_rows(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    """A BOM, CRLF line ends, header and footer records that are no rows, amounts in
    minor units, times with their offset; a payout, a fee, a payment sent and a hold
    skipped."""
    _seed(engine)
    source = _keep(PAYPAL_FILE, tmp_path, PAYPAL_PAYMENTS)

    code, summary = _import(cli, str(source), "--preset", "paypal-settlement")

    assert code == 0
    assert _counts(summary) == {"applied": 4, "skipped": 4}
    assert _skipped(summary) == {9: "T0400", 10: "T0106", 11: "T0000", 12: "T1110"}
    assert _payments(engine) == {
        "1FW12345BN123456C": ("usr-001", "166.67", _utc("2026-06-15 16:15")),
        "2GX23456CO234567D": ("usr-002", "120.50", _utc("2026-06-15 17:00")),
        "3HY34567DP345678E": ("7.1E+08", "50.00", _utc("2026-06-15 18:30:15")),
        "4JZ45678EQ456789F": ("usr-004", "75.25", _utc("2026-06-15 19:00")),
    }


def test_stripe_with_a_bom_and_every_field_quoted_gives_the_same_outcomes(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    _seed(engine)
    plain = _keep(STRIPE_FILE, tmp_path, STRIPE_PAYMENTS)
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerows(csv.reader(io.StringIO(plain.read_text())))
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode())

    code, summary = _import(cli, str(quoted), "--preset", "stripe-payouts")

    assert code == 0 and _counts(summary) == {"applied": 4, "skipped": 4}
    assert set(_payments(engine)) == {f"ch_3QwZ1aBcDeFg000{n}" for n in range(1, 5)}


def test_a_rerun_of_the_same_report_is_duplicates(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    source = _keep(PAYPAL_FILE, tmp_path, PAYPAL_PAYMENTS)
    _import(cli, str(source), "--preset", "paypal-settlement")
    before = (_payments(engine), _due(engine, "usr-001"))

    code, summary = _import(cli, str(source), "--preset", "paypal-settlement")

    assert code == 5
    assert _counts(summary) == {"duplicate": 4, "skipped": 4}
    assert _not_applied(summary) == {5: "duplicate", 6: "duplicate", 7: "duplicate",
                                     8: "duplicate"}  # fmt: skip
    assert (_payments(engine), _due(engine, "usr-001")) == before


def test_a_dry_run_reports_and_writes_nothing(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    source = _keep(ADYEN_118, tmp_path, ADYEN_118_PAYMENTS)
    before = row_counts(engine)

    code, summary = _import(cli, str(source), "--preset", "adyen-settlement", "--dry-run")

    assert code == 0 and summary["dry_run"] is True
    assert _counts(summary) == {"applied": 4, "skipped": 4}
    assert row_counts(engine) == before


def test_rows_that_cannot_be_read_are_invalid_and_exit_5(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    _seed(engine)
    source = tmp_path / "adyen.csv"
    source.write_text(
        "Psp Reference,Merchant Reference,Creation Date,TimeZone,Type,Modification Reference,"
        "Gross Currency,Gross Debit (GC),Gross Credit (GC)\n"
        "P-1,usr-001,2026-06-01 10:00:00,UTC,Settled,M-1,EUR,,10.005\n"
        "P-2,nobody,2026-06-01 10:00:00,UTC,Settled,M-2,EUR,,10.00\n"
        "P-3,usr-001,2026-06-01 10:00:00,UTC,Refused,M-3,EUR,,10.00\n"
        "P-4,usr-001,2026-06-01 10:00:00,UTC,Settled,M-4,EUR,,10.00\n"
    )
    rejects = tmp_path / "rejects.csv"

    code, summary = _import(cli, str(source), "--preset", "adyen-settlement",
                            "--rejects", str(rejects))  # fmt: skip

    assert code == 5
    assert _counts(summary) == {"applied": 1, "invalid": 2, "unknown_user": 1}
    assert _not_applied(summary) == {2: "invalid", 3: "unknown_user", 4: "invalid"}
    reasons = {row["line"]: row["reason"] for row in summary["rejected"]}
    assert reasons[2].startswith("Gross Credit (GC): at most 2 decimal places")
    assert "'Refused' is not a type the adyen-settlement preset reads" in reasons[4]
    lines = rejects.read_text().splitlines()
    assert lines[1].startswith(f"{source},2,P-1,invalid,")
    assert set(_payments(engine)) == {"P-4"}


def _truncate(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.mark.parametrize(
    ("whole", "rerun", "clean"),
    [
        (False, {"applied": 2, "duplicate": 2, "skipped": 4}, {"applied": 4, "skipped": 4}),
        # Rule 12: the refund, the dispute and their reversals come after the killed chunk.
        (True, {"applied": 4, "duplicate": 2, "reversed": 2, "skipped": 4},
         {"applied": 6, "reversed": 2, "skipped": 4}),
    ],
    ids=["payments", "with-reversals"],
)  # fmt: skip
def test_a_killed_report_then_a_rerun_equals_one_clean_run(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    whole: bool,
    rerun: dict[str, int],
    clean: dict[str, int],
) -> None:
    """Chunks of two rows; the second chunk's connection is killed as it is applied: the
    first stays, a re-run finds its payments (``duplicate``) and ends as one clean run;
    the skipped rows are skipped again, whatever chunk they fall in."""
    source = STRIPE_FILE if whole else _keep(STRIPE_FILE, tmp_path, STRIPE_PAYMENTS)
    cli.chunks(payments=2)

    _seed(engine)
    real = terminated_on_second_call(monkeypatch, engine, payment_rules)
    killed = cli("payments", "import", str(source), "--preset", "stripe-payouts")
    assert killed.exit_code == 75, killed.stderr
    assert len(_payments(engine)) == 2
    monkeypatch.setattr(payment_rules, "apply_chunk", real)
    code, summary = _import(cli, str(source), "--preset", "stripe-payouts")
    assert code == 5 and _counts(summary) == rerun
    after_rerun = (_payments(engine), _reversals(engine), [_due(engine, u) for u in PAYERS])

    _truncate(engine)
    _seed(engine)
    code, summary = _import(cli, str(source), "--preset", "stripe-payouts")
    assert code == 0 and _counts(summary) == clean
    assert (_payments(engine), _reversals(engine), [_due(engine, u) for u in PAYERS]) == after_rerun


def test_one_payment_row_per_chunk_ends_as_one_chunk(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = _keep(PAYPAL_FILE, tmp_path, PAYPAL_PAYMENTS)
    content = source.read_bytes().splitlines(keepends=True)
    source.write_bytes(b"".join([*content[:8], content[4], *content[8:]]))  # line 9: line 5 again
    ends = []
    for rows in (1, 100):
        _truncate(engine)
        _seed(engine)
        cli.chunks(payments=rows)
        code, summary = _import(cli, str(source), "--preset", "paypal-settlement")
        ends.append((code, _not_applied(summary), _skipped(summary), _payments(engine)))
    assert ends[0] == ends[1]
    assert ends[0][:3] == (
        5, {9: "duplicate"}, {10: "T0400", 11: "T0106", 12: "T0000", 13: "T1110"},
    )  # fmt: skip


# --- currency ------------------------------------------------------------------------------


def test_bnpl_currency_rejects_rows_in_another_currency(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BNPL_CURRENCY=usd`` (any case): an Adyen report in EUR is rejected row by row
    (``currency``, naming both); its skipped rows stay skipped; a USD report passes."""
    _seed(engine)
    monkeypatch.setenv("BNPL_CURRENCY", "usd")
    adyen = _keep(ADYEN_118, tmp_path, ADYEN_118_PAYMENTS)
    rejects = tmp_path / "rejects.csv"

    code, summary = _import(cli, str(adyen), "--preset", "adyen-settlement",
                            "--rejects", str(rejects))  # fmt: skip

    assert code == 5
    assert _counts(summary) == {"currency": 4, "skipped": 4}
    assert _not_applied(summary) == {2: "currency", 3: "currency", 4: "currency", 5: "currency"}
    reason = summary["rejected"][0]["reason"]
    assert "EUR" in reason and "USD" in reason and "BNPL_CURRENCY" in reason
    assert [line.split(",")[3] for line in rejects.read_text().splitlines()[1:]] == ["currency"] * 4
    assert _payments(engine) == {}

    code, summary = _import(cli, str(_keep(STRIPE_FILE, tmp_path, STRIPE_PAYMENTS)),
                            "--preset", "stripe-payouts")  # fmt: skip
    assert code == 0 and _counts(summary) == {"applied": 4, "skipped": 4}


def test_without_bnpl_currency_the_first_row_fixes_the_files_currency(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    _seed(engine)
    header = (
        "balance_transaction_id,created_utc,currency,gross,reporting_category,source_id,"
        "charge_id,payment_metadata[bnpl_reference]\n"
    )
    source = tmp_path / "stripe.csv"
    source.write_text(
        header
        + "txn_1,2026-05-01 00:00:00,,-1.00,fee,,,\n"  # no currency: fixes nothing
        + "txn_2,2026-05-01 09:00:00,usd,10.00,charge,ch_2,ch_2,usr-001\n"
        + "txn_3,2026-05-01 09:00:00,eur,10.00,charge,ch_3,ch_3,usr-001\n"
        + "txn_4,2026-05-01 09:00:00,USD,10.00,charge,ch_4,ch_4,usr-002\n"
    )

    code, summary = _import(cli, str(source), "--preset", "stripe-payouts")

    assert code == 5
    assert _counts(summary) == {"applied": 2, "currency": 1, "skipped": 1}
    (refused,) = summary["rejected"]
    assert (refused["line"], refused["outcome"]) == (4, "currency")
    assert "EUR" in refused["reason"] and "USD" in refused["reason"]
    assert set(_payments(engine)) == {"ch_2", "ch_4"}


# --- --map and --target ---------------------------------------------------------------------


def test_map_reads_our_fields_in_another_layout(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    source = tmp_path / "bank.csv"
    source.write_text(
        "Buchung,Kunde,Betrag,Zeit,Extra\n"
        "B-1,usr-001,150.00,2026-05-01T09:00:00Z,x\n"
        "B-2,usr-002,10.001,2026-05-01T09:00:00Z,x\n"
        "B-3,usr-004,1000.00,,x\n"
    )

    code, summary = _import(
        cli, str(source), "--map", "reference=Buchung", "--map", "user_id=Kunde",
        "--map", "amount=Betrag", "--map", "paid_at=Zeit",
    )  # fmt: skip

    assert code == 5
    assert _counts(summary) == {"applied": 1, "invalid": 1, "overpayment": 1}
    assert _not_applied(summary) == {3: "invalid", 4: "overpayment"}
    assert "amount (column Betrag)" in summary["rejected"][0]["reason"]
    assert _payments(engine) == {"B-1": ("usr-001", "150.00", _utc("2026-05-01 09:00"))}


def test_target_installment_names_installments(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    with engine.connect() as connection:
        second = connection.execute(
            text("SELECT id FROM installments WHERE user_id = 'usr-002' AND sequence = 2")
        ).scalar_one()
    header = (
        "balance_transaction_id,created_utc,currency,gross,reporting_category,source_id,"
        "charge_id,metadata[installment]\n"
    )
    source = tmp_path / "stripe.csv"
    source.write_text(
        header + f"txn_1,2026-05-01 09:00:00,usd,60.00,charge,ch_1,ch_1,{second}\n"
        "txn_2,2026-05-01 09:00:00,usd,60.00,charge,ch_2,ch_2,999999\n"
    )

    code, summary = _import(cli, str(source), "--preset", "stripe-payouts",
                            "--map", "target=metadata[installment]",
                            "--target", "installment")  # fmt: skip

    assert code == 5
    assert _counts(summary) == {"applied": 1, "unknown_installment": 1}
    assert _due(engine, "usr-002") == ["100.00", "40.00", "100.00"]


# --- faults: the file's (65) and the options' (2) -----------------------------------------


def test_a_missing_column_is_exit_65_naming_it(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    source = tmp_path / "adyen.csv"
    source.write_bytes(ADYEN_118.read_bytes().replace(b"Gross Credit (GC)", b"Gross Credit", 1))

    result = cli("payments", "import", str(source), "--preset", "adyen-settlement")

    assert result.exit_code == 65
    (line,) = result.stderr.strip().splitlines()
    assert "Gross Credit (GC)" in line and "adyen-settlement" in line
    assert _payments(engine) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--preset", "worldpay"], "'worldpay' is not one of"),
        (["--map", "amount"], "--map: expected FIELD=COLUMN"),
        (["--map", "price=Betrag"], "--map: unknown field 'price'"),
        (["--preset", "stripe-payouts", "--map", "amount=gross"], "--map amount: with --preset"),
        (["--preset", "stripe-payouts", "--format", "json"], "--preset"),
        (["--target", "installment"], "--target"),
        (["--target", "invoice"], "'invoice' is not one of"),
    ],
)
def test_bad_options_are_exit_2_and_read_nothing(
    cli: Cli, engine: Engine, tmp_path: Path, options: list[str], message: str
) -> None:
    _seed(engine)
    rejects = tmp_path / "rejects.csv"
    result = cli("payments", "import", str(STRIPE_FILE), "--rejects", str(rejects), *options)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not rejects.exists() and _payments(engine) == {}


def test_without_preset_or_map_the_command_is_unchanged(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Our own layout, today's reader: a ``currency`` column means nothing to it, and
    the summary has every outcome, the new ones at zero."""
    _seed(engine)
    source = tmp_path / "ours.csv"
    source.write_text("reference,amount,user_id,paid_at\nO-1,10.00,usr-001,\n")

    code, summary = _import(cli, str(source))

    assert code == 0 and _counts(summary) == {"applied": 1}
    assert all(summary[name] == 0 for name in ("reversed", "skipped", "currency"))
    assert summary["skipped_rows"] == []


# --- rule 12: reversals and reinstating rows (the lead's SQL) ------------------------------


def test_adyen_report_every_row_type(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    """Rule 12: refunds and chargebacks reverse their payments (``reversed``), their
    reversals put the money back as payments of their own (``applied``)."""
    _seed(engine)
    rejects = tmp_path / "rejects.csv"

    code, summary = _import(cli, str(ADYEN_118), "--preset", "adyen-settlement",
                            "--rejects", str(rejects))  # fmt: skip

    assert code == 0, summary["rejected"]
    assert _counts(summary) == {"applied": 6, "reversed": 3, "skipped": 4}
    assert rejects.read_text().splitlines() == ["file,line,reference,outcome,reason"]
    assert _reversals(engine) == {
        "8836178952207701": ("8816178952203412", "40.00", "Refunded"),
        "8846178952207802": ("8816178952204420", "120.50", "Chargeback"),
        "8866178952208004": ("8816178952206646", "75.25", "SecondChargeback"),
    }
    payments = _payments(engine)
    assert payments["8856178952207903"] == ("usr-002", "120.50", _utc("2026-06-17 10:00"))
    assert payments["8876178952208105"] == ("usr-001", "40.00", _utc("2026-06-18 07:00"))
    assert _due(engine, "usr-004") == ["100.00", "100.00", "100.00"]  # charged back whole
    assert _due(engine, "usr-001") == ["0.00", "33.33", "100.00"]  # refunded, then reinstated
    assert cli("verify").exit_code == 0


def test_adyen_later_report_refund(cli: Cli, engine: Engine) -> None:
    """Rule 12: batch 119's refund of part of a payment of the same file."""
    _seed(engine)

    code, summary = _import(cli, str(ADYEN_119), "--preset", "adyen-settlement")

    assert code == 0, summary["rejected"]
    assert _counts(summary) == {"applied": 2, "reversed": 1, "skipped": 2}
    assert _reversals(engine) == {"8836178952301236": ("8816178952301010", "9.99", "Refunded")}
    assert _due(engine, "usr-005") == ["10.00", "100.00", "100.00"]  # 0.01 left, 9.99 back


def test_stripe_report_every_row_type(cli: Cli, engine: Engine) -> None:
    """Rule 12: a refund and a dispute reversed, a refund's failure and a dispute's
    reversal reinstated under their balance transactions' ids."""
    _seed(engine)

    code, summary = _import(cli, str(STRIPE_FILE), "--preset", "stripe-payouts")

    assert code == 0, summary["rejected"]
    assert _counts(summary) == {"applied": 6, "reversed": 2, "skipped": 4}
    assert _reversals(engine) == {
        "re_3QwZ1aBcDeFg0005": ("ch_3QwZ1aBcDeFg0001", "40.00", "refund"),
        "dp_1QwZ1aBcDeFg0006": ("ch_3QwZ1aBcDeFg0002", "120.50", "dispute"),
    }
    payments = _payments(engine)
    assert payments["txn_3QwZ1aBcDeFg0007"][:2] == ("usr-002", "120.50")
    assert payments["txn_3QwZ1aBcDeFg0008"][:2] == ("usr-001", "40.00")
    assert cli("verify").exit_code == 0


def test_paypal_report_every_row_type(cli: Cli, engine: Engine) -> None:
    """Rule 12: T1107 (a refund), T1201 (a chargeback), T1106 (a reversal) reversed; T1202
    (a chargeback reversed) reinstated."""
    _seed(engine)

    code, summary = _import(cli, str(PAYPAL_FILE), "--preset", "paypal-settlement")

    assert code == 0, summary["rejected"]
    assert _counts(summary) == {"applied": 5, "reversed": 3, "skipped": 4}
    assert _reversals(engine) == {
        "5KA56789FR567890G": ("1FW12345BN123456C", "40.00", "T1107"),
        "6LB67890GS678901H": ("2GX23456CO234567D", "120.50", "T1201"),
        "8ND89012JU890123K": ("4JZ45678EQ456789F", "75.25", "T1106"),
    }
    assert _payments(engine)["7MC78901HT789012J"][:2] == ("usr-002", "120.50")
    assert cli("verify").exit_code == 0


def test_a_rerun_of_a_report_with_reversals_is_duplicates(cli: Cli, engine: Engine) -> None:
    """Rule 12: payments, reversals and reinstating rows all come back as duplicates."""
    _seed(engine)
    _import(cli, str(STRIPE_FILE), "--preset", "stripe-payouts")
    before = (_payments(engine), _reversals(engine), _due(engine, "usr-001"))

    code, summary = _import(cli, str(STRIPE_FILE), "--preset", "stripe-payouts")

    assert code == 5
    assert _counts(summary) == {"duplicate": 8, "skipped": 4}
    assert (_payments(engine), _reversals(engine), _due(engine, "usr-001")) == before


def test_reversals_of_unknown_payments_and_over_reversals(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Rule 12 through ``--map``: kind and original_reference columns."""
    _seed(engine)
    source = tmp_path / "ours.csv"
    source.write_text(
        "ref,user,amount,kind,of\n"
        "P-1,usr-001,50.00,payment,\n"
        "R-1,,20.00,reversal,P-1\n"  # reversed
        "R-2,,40.00,reversal,P-1\n"  # more than the 30.00 left
        "R-3,,5.00,reversal,P-404\n"  # no such payment
        "R-1,,20.00,reversal,P-1\n"  # R-1 again
        "R-1,,21.00,reversal,P-1\n"  # R-1 with other content
    )

    code, summary = _import(cli, str(source), "--map", "reference=ref", "--map", "user_id=user",
                            "--map", "original_reference=of")  # fmt: skip

    assert code == 5
    assert _not_applied(summary) == {
        4: "over_reversal", 5: "unknown_payment", 6: "duplicate", 7: "conflict",
    }  # fmt: skip
    assert _counts(summary) == {
        "applied": 1, "reversed": 1, "over_reversal": 1, "unknown_payment": 1,
        "duplicate": 1, "conflict": 1,
    }  # fmt: skip
    assert _reversals(engine) == {"R-1": ("P-1", "20.00", "reversal")}
    assert _due(engine, "usr-001") == ["70.00", "100.00", "100.00"]


def test_a_dry_run_with_reversals_writes_nothing(cli: Cli, engine: Engine) -> None:
    """Rule 12: the dry run reports the real run's outcomes."""
    _seed(engine)
    before = row_counts(engine)

    code, summary = _import(cli, str(PAYPAL_FILE), "--preset", "paypal-settlement", "--dry-run")

    assert code == 0
    assert _counts(summary) == {"applied": 5, "reversed": 3, "skipped": 4}
    assert row_counts(engine) == before


def test_one_row_per_chunk_ends_as_one_chunk(cli: Cli, engine: Engine) -> None:
    """Rule 12: a reversal in the chunk after its payment's, or in the same one."""
    ends = []
    for rows in (1, 100):
        _truncate(engine)
        _seed(engine)
        cli.chunks(payments=rows)
        code, summary = _import(cli, str(ADYEN_118), "--preset", "adyen-settlement")
        ends.append((code, _counts(summary), _payments(engine), _reversals(engine)))
    assert ends[0] == ends[1]
    assert Decimal(ends[0][2]["8816178952203412"][1]) == Decimal("166.67")


@pytest.mark.usefixtures("no_database")
def test_the_commands_presets_are_the_readers() -> None:
    from bnplctl.cli.payments import Preset
    from bnplctl.importing.presets import PRESETS

    assert tuple(preset.value for preset in Preset) == PRESETS
