"""The debt view of one user: overdue installments and their total."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from bnplctl.errors import NotFound
from bnplctl.money import format_amount

# One query, served by the partial index ix_installments_user_id_overdue.
_DEBT_SQL = text(
    "SELECT u.status, i.id, i.plan_id, i.amount_due, i.due_date"
    " FROM users u"
    " LEFT JOIN installments i ON i.user_id = u.user_id AND i.status = 'OVERDUE'"
    " WHERE u.user_id = :user_id"
    " ORDER BY i.due_date, i.id"
)


def debt_of(session: Session, user_id: str, business_date: date) -> dict[str, Any]:
    rows = session.execute(_DEBT_SQL, {"user_id": user_id}).all()
    if not rows:
        raise NotFound(f"user {user_id} not found")
    overdue = [row for row in rows if row.id is not None]
    total = sum((Decimal(row.amount_due) for row in overdue), Decimal("0"))
    return {
        "user_id": user_id,
        "has_overdue": bool(overdue),
        "total_debt": format_amount(total),
        "overdue_installments": [
            {
                "id": row.id,
                "plan_id": row.plan_id,
                "amount_due": format_amount(row.amount_due),
                "due_date": row.due_date.isoformat(),
                "days_overdue": (business_date - row.due_date).days,
            }
            for row in overdue
        ],
        "total_overdue_count": len(overdue),
        "user_status": rows[0].status,
    }
