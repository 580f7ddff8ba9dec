"""Rule 1 without a database: a plan's split and calendar, and how a preview shows them.
Pure (no ORM): ``plans preview`` imports only this."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from bnplctl.money import due_dates, format_amount, split_amount


@dataclass(frozen=True)
class ScheduledInstallment:
    sequence: int
    amount_due: Decimal
    due_date: date


def schedule(total: Decimal, count: int, start: date) -> list[ScheduledInstallment]:
    """Rule 1: the split and the calendar, nothing written."""
    return [
        ScheduledInstallment(sequence, amount, due)
        for sequence, (amount, due) in enumerate(
            zip(split_amount(total, count), due_dates(start, count), strict=True), start=1
        )
    ]


def public_schedule(
    total: Decimal, start: date, rows: list[ScheduledInstallment]
) -> dict[str, Any]:
    return {
        "total_amount": format_amount(total),
        "start_date": start.isoformat(),
        "installments": [
            {
                "sequence": row.sequence,
                "amount_due": format_amount(row.amount_due),
                "due_date": row.due_date.isoformat(),
            }
            for row in rows
        ],
    }
