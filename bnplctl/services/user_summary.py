"""One user as every output shows it (masked), and ``users show``'s summary read on the
raw driver: no ORM, no SQLAlchemy, for the lookup a terminal waits for."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bnplctl import pii
from bnplctl.errors import NotFound
from bnplctl.money import format_amount
from bnplctl.validators import user_not_found

if TYPE_CHECKING:
    from bnplctl.db import DbapiConnection

USER_FIELDS = (
    "user_id",
    "full_name",
    "phone_e164",
    "passport_masked",
    "card_first6",
    "card_last4",
    "card_brand",
    "date_of_birth",
    "status",
    "created_at",
)


def public_user_values(user: Mapping[str, Any]) -> dict[str, Any]:
    """The user (a row of ``USER_FIELDS``) with phone, passport and card masked."""
    created = user["created_at"]
    return {
        "user_id": user["user_id"],
        "full_name": user["full_name"],
        "phone_number": pii.mask_phone(user["phone_e164"]),
        "passport_number": user["passport_masked"],
        "card_number": pii.mask_card(user["card_first6"], user["card_last4"]),
        "card_brand": user["card_brand"],
        "date_of_birth": user["date_of_birth"].isoformat(),
        "status": user["status"],
        "created_at": created.isoformat() if created else None,
    }


# The user, their plans by status and what they owe, in one round trip.
# What the user owes comes from their ACTIVE plans' installments (index lookups: an unpaid
# installment's plan is ACTIVE by rule 4), never a scan of every installment.
_SUMMARY_SQL = f"""
    SELECT {", ".join(f"u.{name}" for name in USER_FIELDS)},
           (SELECT count(*) FROM plans p
             WHERE p.user_id = u.user_id AND p.status = 'ACTIVE') AS plans_active,
           (SELECT count(*) FROM plans p
             WHERE p.user_id = u.user_id AND p.status = 'COMPLETED') AS plans_completed,
           owed.outstanding, owed.overdue_amount, owed.overdue_count
    FROM users u
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(i.amount_due), 0) AS outstanding,
               coalesce(sum(i.amount_due) FILTER (WHERE i.status = 'OVERDUE'), 0)
                   AS overdue_amount,
               count(*) FILTER (WHERE i.status = 'OVERDUE') AS overdue_count
        FROM plans p
        JOIN installments i ON i.plan_id = p.id AND i.status <> 'PAID'
        WHERE p.user_id = u.user_id AND p.status = 'ACTIVE'
    ) AS owed
    WHERE u.user_id = %(user_id)s
"""  # noqa: S608 - the column names are the constants above


def user_summary(connection: DbapiConnection, user_id: str) -> dict[str, Any]:
    """One user, masked, with counts of their plans and what they owe, read on a DB-API
    ``connection`` (``db.unit(readonly=True)``)."""
    from bnplctl.db import fetch_all

    rows = fetch_all(connection, _SUMMARY_SQL, {"user_id": user_id})
    if not rows:
        raise NotFound(user_not_found(user_id))
    row = rows[0]
    return public_user_values(row) | {
        "plans_active": int(row["plans_active"]),
        "plans_completed": int(row["plans_completed"]),
        "outstanding_amount": format_amount(Decimal(row["outstanding"])),
        "total_debt": format_amount(Decimal(row["overdue_amount"])),
        "overdue_installments": int(row["overdue_count"]),
    }
