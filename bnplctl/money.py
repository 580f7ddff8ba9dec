"""Money as ``Decimal`` with two places: parsing, the installment split and due dates."""

from __future__ import annotations

import calendar
import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from bnplctl.errors import InvalidInput

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12,2)
MIN_INSTALLMENTS = 1
MAX_INSTALLMENTS = 24


_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_amount(raw: str | Decimal | int, field: str = "amount") -> Decimal:
    """A positive amount with at most two decimals, or ``InvalidInput`` naming ``field``.
    Text must be ASCII digits with an optional point: no sign, exponent, underscore,
    thousands separator or other digits."""
    if isinstance(raw, str) and not _AMOUNT.fullmatch(raw.strip()):
        raise InvalidInput(
            f"{field}: must be a number written with digits and an optional point, like 120.50"
        )
    if isinstance(raw, str) and len(raw.strip().partition(".")[2]) > 2:
        raise InvalidInput(f"{field}: at most 2 decimal places")  # as written: 1.000 too
    try:
        amount = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidInput(f"{field}: not a number") from None
    if not amount.is_finite():
        raise InvalidInput(f"{field}: not a number")
    if amount <= 0:
        raise InvalidInput(f"{field}: must be greater than 0")
    if amount > MAX_AMOUNT:  # first: quantizing 1e400 would overflow the context
        raise InvalidInput(f"{field}: must be at most {MAX_AMOUNT}")
    if amount != amount.quantize(CENT):
        raise InvalidInput(f"{field}: at most 2 decimal places")
    return amount.quantize(CENT)


def format_amount(amount: Decimal) -> str:
    """Money as a string with exactly two decimals (the JSON form)."""
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def split_amount(total: Decimal, count: int) -> list[Decimal]:
    """Rule 1: ``count - 1`` shares of total/count rounded half-up, the last takes the rest."""
    if not MIN_INSTALLMENTS <= count <= MAX_INSTALLMENTS:
        raise InvalidInput(
            f"installments: must be between {MIN_INSTALLMENTS} and {MAX_INSTALLMENTS}"
        )
    share = (total / count).quantize(CENT, rounding=ROUND_HALF_UP)
    last = total - share * (count - 1)
    if share <= 0:  # fewer cents than installments
        raise InvalidInput(
            f"amount: {total} is too small for {count} installments: the first"
            f" {count - 1} would be {share} each ({total}/{count} rounded half-up to cents)"
        )
    if last <= 0:
        # The shares rounded up can take the whole total (2.76 in 24: 23 of 0.12): the last
        # installment, which takes the remainder, must stay above zero too.
        raise InvalidInput(
            f"amount: {total} in {count} installments: the first {count - 1} are {share} each"
            f" ({total}/{count} rounded half-up to cents), which leaves {last} for the last"
            " one; every installment must be more than 0 (rule 1)"
        )
    return [share] * (count - 1) + [last]


def add_months(start: date, months: int) -> date:
    """``start`` plus calendar months, clamped to the target month's last day."""
    month_index = start.month - 1 + months
    year = start.year + month_index // 12
    month = month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def due_dates(start: date, count: int) -> list[date]:
    """Monthly due dates, the first one month after ``start`` (rule 1)."""
    if start.year + (start.month - 1 + count) // 12 > date.max.year:
        raise InvalidInput(f"start: the installments would fall due after {date.max}")
    return [add_months(start, n) for n in range(1, count + 1)]
