"""Rule 1: the split and the calendar, exact to the cent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import Phase, assume, example, given, settings
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


def _months_later(start: date, months: int) -> tuple[int, int]:
    """The (year, month) ``months`` calendar months after ``start``'s."""
    year, month_index = divmod(start.month - 1 + months, 12)
    return start.year + year, month_index + 1


def _last_day(year: int, month: int) -> int:
    """The month's last day, counted back from the next month's first (not
    ``calendar.monthrange``, which ``add_months`` uses)."""
    next_year, next_month_index = divmod(month, 12)
    return (date(year + next_year, next_month_index + 1, 1) - timedelta(days=1)).day


def _check_due_dates(impl: Callable[[date, int], list[date]], start: date, count: int) -> None:
    """Rule 1's calendar, exactly: the n-th due date is ``start``'s day n months later, or
    that month's last day when the month is shorter (each from ``start``, never from the
    due date before it: Jan 31 gives Feb 28, then Mar 31)."""
    dates = impl(start, count)
    assert len(dates) == count
    for months, due in enumerate(dates, start=1):
        year, month = _months_later(start, months)
        assert due == date(year, month, min(start.day, _last_day(year, month))), (months, due)


_STARTS = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1))
# The clamp, pinned whatever hypothesis draws: month ends of 31, 30, 29 (a leap year) and
# 28 days, from a 31st, a 30th and a 29th, across the year's end.
_PINNED = [
    (date(2025, 1, 31), 4),  # Feb 28, Mar 31, Apr 30, May 31
    (date(2024, 1, 31), 2),  # Feb 29, Mar 31
    (date(2024, 1, 29), 13),  # Feb 29 2024, ..., Feb 28 2025
    (date(2025, 8, 30), 7),  # ..., Feb 28 2026, Mar 30
    (date(2025, 11, 30), 3),  # Dec 30, Jan 30, Feb 28
    (date(2025, 12, 15), 2),  # Jan 15 2026, Feb 15 2026
]


@example(*_PINNED[0])
@example(*_PINNED[1])
@example(*_PINNED[2])
@example(*_PINNED[3])
@example(*_PINNED[4])
@example(*_PINNED[5])
@given(_STARTS, st.integers(1, 24))
def test_each_due_date_is_the_start_day_or_that_months_last_day(start: date, count: int) -> None:
    _check_due_dates(due_dates, start, count)
    dates = due_dates(start, count)
    assert all(a < b for a, b in zip(dates, dates[1:], strict=False))


# A broken subject only has to fail: no shrinking of the example.
_NO_SHRINKING = (Phase.explicit, Phase.generate)


def _clamped_to_28(start: date, count: int) -> list[date]:
    """Broken: every month ends on the 28th."""
    return [due.replace(day=min(due.day, 28)) for due in due_dates(start, count)]


def _no_leap_years(start: date, count: int) -> list[date]:
    """Broken: February has 28 days, leap year or not."""
    return [
        due.replace(day=min(due.day, 28)) if due.month == 2 else due
        for due in due_dates(start, count)
    ]


def _each_from_the_one_before(start: date, count: int) -> list[date]:
    """Broken: each due date a month after the one before (Jan 31, Feb 28, Mar 28)."""
    dates = [add_months(start, 1)]
    while len(dates) < count:
        dates.append(add_months(dates[-1], 1))
    return dates


def _a_day_short(start: date, count: int) -> list[date]:
    """Broken: a day the month lacks falls on the day before the month's last."""
    return [
        due if due.day == start.day else due - timedelta(days=1) for due in due_dates(start, count)
    ]


@pytest.mark.parametrize(
    "broken",
    [
        _clamped_to_28,
        _no_leap_years,
        _each_from_the_one_before,
        _a_day_short,
    ],
    ids=lambda broken: broken.__name__,
)
def test_the_calendar_property_fails_on_a_broken_calendar(
    broken: Callable[[date, int], list[date]],
) -> None:
    """The property above on a calendar broken on purpose: it must fail (CONVENTIONS.md:
    a property test must fail on a deliberately broken subject)."""

    def check(start: date, count: int) -> None:
        _check_due_dates(broken, start, count)

    run = given(_STARTS, st.integers(1, 24))(check)
    for start, count in _PINNED:
        run = example(start, count)(run)
    with pytest.raises(AssertionError):
        settings(database=None, derandomize=True, report_multiple_bugs=False, phases=_NO_SHRINKING)(
            run
        )()
