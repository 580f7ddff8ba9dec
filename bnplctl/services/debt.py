"""The debt view of one user: overdue installments and their total."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bnplctl.errors import NotFound
from bnplctl.money import format_amount
from bnplctl.validators import user_not_found

if TYPE_CHECKING:
    from bnplctl.db import DbapiConnection

# One query, served by the partial index ix_installments_user_id_overdue.
_DEBT_SQL = """
    SELECT u.status, i.id, i.plan_id, i.amount_due, i.due_date
    FROM users u
    LEFT JOIN installments i ON i.user_id = u.user_id AND i.status = 'OVERDUE'
    WHERE u.user_id = %(user_id)s
    ORDER BY i.due_date, i.id
"""


def debt_of(connection: DbapiConnection, user_id: str, business_date: date) -> dict[str, Any]:
    """What ``user_id`` owes at ``business_date``, read on a DB-API ``connection``
    (``db.unit(readonly=True)``: this is the read a terminal waits for)."""
    from bnplctl.db import fetch_all

    rows = fetch_all(connection, _DEBT_SQL, {"user_id": user_id})
    if not rows:
        raise NotFound(user_not_found(user_id))
    overdue = [row for row in rows if row["id"] is not None]
    total = sum((Decimal(row["amount_due"]) for row in overdue), Decimal("0"))
    return {
        "user_id": user_id,
        "has_overdue": bool(overdue),
        "total_debt": format_amount(total),
        "overdue_installments": [
            {
                "id": row["id"],
                "plan_id": row["plan_id"],
                "amount_due": format_amount(row["amount_due"]),
                "due_date": row["due_date"].isoformat(),
                "days_overdue": days_overdue(row["due_date"], business_date),
            }
            for row in overdue
        ],
        "total_overdue_count": len(overdue),
        "user_status": rows[0]["status"],
    }


def days_overdue(due_date: date, business_date: date) -> int:
    """Days from the due date to the business date, never below 0: a sweep for a future
    date (``--allow-future``) marks installments not yet due today."""
    return max((business_date - due_date).days, 0)


# The user and their unpaid installments, in the order a payment to them pays (rule 10),
# through the user's ACTIVE plans (index lookups; an unpaid installment's plan is ACTIVE).
_EXPLAIN_SQL = """
    SELECT u.status AS user_status, i.id, i.plan_id, i.amount_due, i.due_date,
           i.status, i.overdue_since, i.overdue_run_id
    FROM users u
    LEFT JOIN (
        plans p
        JOIN installments i ON i.plan_id = p.id AND i.status <> 'PAID'
    ) ON p.user_id = u.user_id AND p.status = 'ACTIVE'
    WHERE u.user_id = %(user_id)s
    ORDER BY i.due_date, i.plan_id, i.sequence
"""
_HISTORY_SQL = """
    SELECT occurred_at, actor, action, entity, entity_id, details
    FROM audit_events
    WHERE user_id = %(user_id)s
    ORDER BY occurred_at DESC, id DESC
    LIMIT %(limit)s
"""
HISTORY_EVENTS = 10


def explain(connection: DbapiConnection, user_id: str, business_date: date) -> dict[str, Any]:
    """Why ``user_id`` has their status (``debt explain``): since when they are in debt,
    what clears it, what is due next, and their latest audit events."""
    from bnplctl.db import fetch_all

    rows = fetch_all(connection, _EXPLAIN_SQL, {"user_id": user_id})
    if not rows:
        raise NotFound(user_not_found(user_id))
    unpaid = [row for row in rows if row["id"] is not None]
    overdue = [row for row in unpaid if row["status"] == "OVERDUE"]
    upcoming = [row for row in unpaid if row["status"] == "UPCOMING"]
    earliest = min(overdue, key=lambda row: (row["overdue_since"], row["id"]), default=None)
    since = earliest["overdue_since"] if earliest else None
    ahead = [row for row in overdue if row["overdue_since"] > business_date]
    furthest = max(ahead, key=lambda row: (row["overdue_since"], row["id"]), default=None)
    history = fetch_all(connection, _HISTORY_SQL, {"user_id": user_id, "limit": HISTORY_EVENTS})
    return {
        "user_id": user_id,
        "user_status": rows[0]["user_status"],
        "overdue_since": since.isoformat() if since else None,
        "marked_by_run": earliest["overdue_run_id"] if earliest else None,
        # Installments marked by a sweep for a date after today (--allow-future).
        "marked_ahead": (
            {
                "run_id": furthest["overdue_run_id"],
                "business_date": furthest["overdue_since"].isoformat(),
                "installments": [row["id"] for row in ahead],
            }
            if furthest
            else None
        ),
        "to_clear": format_amount(sum((row["amount_due"] for row in overdue), Decimal("0"))),
        "overdue_installments": [
            {
                "id": row["id"],
                "plan_id": row["plan_id"],
                "amount_due": format_amount(row["amount_due"]),
                "due_date": row["due_date"].isoformat(),
                "overdue_since": row["overdue_since"].isoformat(),
                "days_overdue": days_overdue(row["due_date"], business_date),
                "sweep_run": row["overdue_run_id"],
            }
            for row in overdue
        ],
        "next_due": (
            {
                "id": upcoming[0]["id"],
                "plan_id": upcoming[0]["plan_id"],
                "amount_due": format_amount(upcoming[0]["amount_due"]),
                "due_date": upcoming[0]["due_date"].isoformat(),
                "past_due": upcoming[0]["due_date"] < business_date,
            }
            if upcoming
            else None
        ),
        # Rule 12: the payments taken back among the latest events, newest first.
        "reversals": [
            {
                "payment_id": int(event["entity_id"]),
                "reversal_id": event["details"].get("reversal_id"),
                "reference": event["details"].get("reference"),
                "amount": event["details"].get("amount"),
                "reason": event["details"].get("reason"),
                "occurred_at": event["occurred_at"].isoformat(),
            }
            for event in history
            if event["action"] == "payment.reversed"
        ],
        "history": [
            {
                "occurred_at": event["occurred_at"].isoformat(),
                "actor": event["actor"],
                "action": event["action"],
                "entity": event["entity"],
                "entity_id": event["entity_id"],
                "details": event["details"],
            }
            for event in history
        ],
    }


def narrative(explained: dict[str, Any]) -> str:
    """The explanation in a few sentences, for a person at a terminal."""
    user, status = explained["user_id"], explained["user_status"]
    overdue = explained["overdue_installments"]
    if overdue:
        count = f"{len(overdue)} installment{'s' if len(overdue) != 1 else ''} overdue"
        since = ""
        if status == "DEBT_USER":
            run = explained["marked_by_run"]
            since = f" since {explained['overdue_since']}" + (f" (sweep run {run})" if run else "")
        text = f"{user} is {status}{since}: {count}; paying {explained['to_clear']} clears it."
        ahead = explained["marked_ahead"]
        if ahead:
            ids = ", ".join(str(installment) for installment in ahead["installments"])
            plural = "s" if len(ahead["installments"]) != 1 else ""
            text += (
                f" Installment{plural} {ids} {'were' if plural else 'was'} marked by a sweep"
                f" for a future date ({ahead['business_date']}, run {ahead['run_id']}):"
                " not yet due today."
            )
    else:
        text = f"{user} is {status}: nothing is overdue."
    upcoming = explained["next_due"]
    if upcoming:
        late = "; past due, the next sweep marks it OVERDUE" if upcoming["past_due"] else ""
        text += (
            f" Next due: {upcoming['amount_due']} on {upcoming['due_date']}"
            f" (installment {upcoming['id']} of plan {upcoming['plan_id']}{late})."
        )
    else:
        text += " Nothing else is due."
    for reversal in explained.get("reversals", []):
        why = f", {reversal['reason']}" if reversal["reason"] else ""
        text += (
            f" Payment {reversal['payment_id']} was reversed: {reversal['amount']}"
            f" ({reversal['reference']}{why}) on {reversal['occurred_at'][:10]}."
        )
    return text


BUCKETS = ("1-30", "31-60", "61-90", "90+")

# One aggregate query over the OVERDUE installments (partial index on status); the
# empty grouping set adds the totals row (bucket NULL).
_AGING_SQL = """
    SELECT bucket, count(DISTINCT user_id) AS users, count(*) AS installments,
           coalesce(sum(amount_due), 0) AS amount
    FROM (
        SELECT user_id, amount_due,
               CASE WHEN due_date >= CAST(%(business_date)s AS date) - 30 THEN '1-30'
                    WHEN due_date >= CAST(%(business_date)s AS date) - 60 THEN '31-60'
                    WHEN due_date >= CAST(%(business_date)s AS date) - 90 THEN '61-90'
                    ELSE '90+' END AS bucket
        FROM installments WHERE status = 'OVERDUE'
    ) AS overdue
    GROUP BY GROUPING SETS ((bucket), ())
"""


def aging_report(connection: DbapiConnection, business_date: date) -> dict[str, Any]:
    """Overdue installments by days overdue: users, installments and amount per bucket,
    read on a DB-API ``connection``."""
    from bnplctl.db import fetch_all

    found = {
        row["bucket"]: row
        for row in fetch_all(connection, _AGING_SQL, {"business_date": business_date})
    }

    def figures(key: str | None) -> dict[str, Any]:
        row = found.get(key)
        return {
            "users": int(row["users"]) if row else 0,
            "installments": int(row["installments"]) if row else 0,
            "amount": format_amount(Decimal(row["amount"]) if row else Decimal(0)),
        }

    totals = figures(None)
    return {
        "business_date": business_date.isoformat(),
        "total_users": totals["users"],
        "total_installments": totals["installments"],
        "total_amount": totals["amount"],
        "buckets": [{"bucket": name} | figures(name) for name in BUCKETS],
    }
