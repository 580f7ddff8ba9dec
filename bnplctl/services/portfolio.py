"""The portfolio at a glance (``debt report --html``): aging, the debt over the last
sweeps, payments and refunds per day, the largest debtors. Plain reads on a DB-API
connection (``db.unit(readonly=True)``); personal data leaves masked."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bnplctl.money import format_amount

if TYPE_CHECKING:
    from bnplctl.db import DbapiConnection

SWEEPS_SHOWN = 30
DAYS_SHOWN = 30
DEBTORS_SHOWN = 10

# The last successful run of each business date (a later run of a date, or one after a
# revert, tells that date's state).
_HISTORY_SQL = """
    SELECT business_date, overdue_amount, debt_users FROM (
        SELECT DISTINCT ON (business_date) business_date, overdue_amount, debt_users
        FROM sweep_runs
        WHERE outcome = 'SUCCEEDED' AND NOT dry_run AND overdue_amount IS NOT NULL
        ORDER BY business_date DESC, id DESC
    ) AS per_date
    ORDER BY business_date DESC
    LIMIT %(limit)s
"""
_PAYMENTS_SQL = """
    SELECT (paid_at AT TIME ZONE %(tz)s)::date AS day, count(*) AS count, sum(amount) AS amount
    FROM payments
    WHERE paid_at >= %(since)s::date AT TIME ZONE %(tz)s
      AND paid_at < %(after)s::date AT TIME ZONE %(tz)s
    GROUP BY 1
"""
_REFUNDS_SQL = """
    SELECT (processed_at AT TIME ZONE %(tz)s)::date AS day, count(*) AS count,
           sum(amount) AS amount
    FROM refunds
    WHERE status = 'COMPLETED' AND processed_at >= %(since)s::date AT TIME ZONE %(tz)s
      AND processed_at < %(after)s::date AT TIME ZONE %(tz)s
    GROUP BY 1
"""
# The partial index on OVERDUE installments by user serves the grouping.
_DEBTORS_SQL = """
    SELECT d.user_id, u.phone_e164, d.amount, d.installments, d.since
    FROM (
        SELECT user_id, sum(amount_due) AS amount, count(*) AS installments,
               min(overdue_since) AS since
        FROM installments
        WHERE status = 'OVERDUE'
        GROUP BY user_id
        ORDER BY amount DESC, user_id
        LIMIT %(limit)s
    ) AS d
    JOIN users u ON u.user_id = d.user_id
    ORDER BY d.amount DESC, d.user_id
"""


def portfolio(connection: DbapiConnection, business_date: date, timezone: str) -> dict[str, Any]:
    """Everything the report draws, amounts as strings (``Decimal`` never a float)."""
    from bnplctl.db import fetch_all
    from bnplctl.pii import mask_phone
    from bnplctl.services.debt import aging_report

    since = business_date - timedelta(days=DAYS_SHOWN - 1)
    # Only the days shown: a moment stored far ahead (year 9999) is no day Python can
    # hold in every zone, and no day of this report either.
    window = {"tz": timezone, "since": since, "after": business_date + timedelta(days=1)}
    history = fetch_all(connection, _HISTORY_SQL, {"limit": SWEEPS_SHOWN})
    payments = {row["day"]: row for row in fetch_all(connection, _PAYMENTS_SQL, window)}
    refunds = {row["day"]: row for row in fetch_all(connection, _REFUNDS_SQL, window)}
    days = [since + timedelta(days=n) for n in range(DAYS_SHOWN)]

    def money(row: dict[str, Any] | None) -> str:
        return format_amount(Decimal(row["amount"]) if row else Decimal(0))

    return {
        "business_date": business_date.isoformat(),
        "aging": aging_report(connection, business_date),
        "sweeps": [
            {
                "business_date": row["business_date"].isoformat(),
                "overdue_amount": format_amount(Decimal(row["overdue_amount"])),
                "debt_users": int(row["debt_users"]),
            }
            for row in reversed(history)
        ],
        "days": [
            {
                "date": day.isoformat(),
                "payments": int(payments[day]["count"]) if day in payments else 0,
                "payments_amount": money(payments.get(day)),
                "refunds": int(refunds[day]["count"]) if day in refunds else 0,
                "refunds_amount": money(refunds.get(day)),
            }
            for day in days
        ],
        "largest_debtors": [
            {
                "user_id": row["user_id"],
                "phone_number": mask_phone(row["phone_e164"]),
                "overdue_amount": format_amount(Decimal(row["amount"])),
                "installments": int(row["installments"]),
                "overdue_since": row["since"].isoformat() if row["since"] else None,
            }
            for row in fetch_all(connection, _DEBTORS_SQL, {"limit": DEBTORS_SHOWN})
        ],
    }
