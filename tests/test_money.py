"""Rule 1: the split and the calendar, exact to the cent."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bnplctl.errors import InvalidInput
from bnplctl.money import CENT, add_months, due_dates, format_amount, parse_amount, split_amount

pytestmark = pytest.mark.usefixtures("no_database")


def test_split_example_from_the_contract() -> None:
    assert split_amount(Decimal("500.00"), 3) == [
        Decimal("166.67"),
        Decimal("166.67"),
        Decimal("166.66"),
    ]
    assert split_amount(Decimal("100.00"), 1) == [Decimal("100.00")]
    assert split_amount(Decimal("0.05"), 2) == [Decimal("0.03"), Decimal("0.02")]


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000.00"), places=2),
    st.integers(min_value=1, max_value=24),
)
def test_installments_always_sum_to_the_total(total: Decimal, count: int) -> None:
    # Rounding up may take up to half a cent per installment from the last one; below this
    # bound rule 1 cannot give every installment a positive amount (see the next test).
    assume(total > CENT * count * (count - 1) / 2)
    shares = split_amount(total, count)

    assert len(shares) == count
    assert sum(shares) == total
    assert all(share > 0 for share in shares)
    assert all(share == share.quantize(CENT) for share in shares)
    assert all(share == shares[0] for share in shares[:-1])
    assert abs(shares[-1] - shares[0]) <= CENT * count / 2


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("3.00"), places=2),
    st.integers(min_value=1, max_value=24),
)
def test_tiny_totals_split_positively_or_are_refused(total: Decimal, count: int) -> None:
    try:
        shares = split_amount(total, count)
    except InvalidInput as exc:
        # Refused only when the rounded shares leave the last one nothing (rule 1).
        share = (total / count).quantize(CENT, rounding=ROUND_HALF_UP)
        assert share <= 0 or total - share * (count - 1) <= 0, exc.message
        assert "too small" in exc.message or "for the last one" in exc.message
    else:
        assert sum(shares) == total and all(share > 0 for share in shares)


@pytest.mark.parametrize("count", [0, 25, -1])
def test_installment_count_out_of_range(count: int) -> None:
    with pytest.raises(InvalidInput, match="installments: must be between 1 and 24"):
        split_amount(Decimal("100"), count)


STRICT = "digits and an optional point"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0", "greater than 0"),
        ("0.00", "greater than 0"),
        ("1.234", "at most 2 decimal places"),
        ("10000000000", "at most"),
        # Strict input: no sign, exponent, underscore, separator or other digits.
        ("-5", STRICT),
        ("+5", STRICT),
        ("abc", STRICT),
        ("NaN", STRICT),
        ("Infinity", STRICT),
        ("1e3", STRICT),
        ("1e400", STRICT),
        ("1e-400", STRICT),
        ("1_000", STRICT),
        ("1,000.00", STRICT),
        ("\u0661\u0660\u0660", STRICT),  # Arabic-Indic digits
        ("10.", STRICT),
        (".5", STRICT),
        ("", STRICT),
    ],
)
def test_bad_amounts(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_amount(raw)


def test_amount_parsing_and_formatting() -> None:
    assert parse_amount(" 12.5 ") == Decimal("12.50")
    assert format_amount(parse_amount("12.5")) == "12.50"
    assert format_amount(Decimal("7")) == "7.00"


def test_due_dates_clamp_to_month_ends() -> None:
    assert due_dates(date(2025, 1, 31), 3) == [
        date(2025, 2, 28),
        date(2025, 3, 31),
        date(2025, 4, 30),
    ]
    assert due_dates(date(2024, 1, 31), 1) == [date(2024, 2, 29)]
    assert due_dates(date(2025, 12, 15), 2) == [date(2026, 1, 15), date(2026, 2, 15)]
    assert add_months(date(2025, 11, 30), 3) == date(2026, 2, 28)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)), st.integers(1, 24))
def test_due_dates_strictly_increase_one_month_apart(start: date, count: int) -> None:
    dates = due_dates(start, count)
    assert all(a < b for a, b in zip(dates, dates[1:], strict=False))
    for months, due in enumerate(dates, start=1):
        expected_month = (start.month - 1 + months) % 12 + 1
        assert due.month == expected_month
        assert due.day == start.day or due.day < start.day
