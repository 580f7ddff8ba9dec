"""Rule 4, the one place it is written: a plan whose installments are all PAID becomes
COMPLETED; a DEBT_USER with no OVERDUE installment left becomes NORMAL.

Every channel that pays installments off (``installments pay``, ``refunds approve``, a
webhook file's approvals) calls ``settle`` after its writes, in the same transaction and
under the locks of ``services/locks.py``, so the "all PAID" and "no OVERDUE left" it
decides are about committed data. Each change is audited in the same statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bnplctl.services.audit import USER_STATUS_CHANGED, insert_events
from bnplctl.sql import Statement, run

if TYPE_CHECKING:
    from bnplctl.db import Executor

_SETTLE = Statement(
    """
    WITH completed_plans AS (
        UPDATE plans SET status = 'COMPLETED', updated_at = :now
        WHERE id = ANY(:plan_ids)
          AND status = 'ACTIVE'
          AND NOT EXISTS (
              SELECT 1 FROM installments i WHERE i.plan_id = plans.id AND i.status <> 'PAID'
          )
        RETURNING id, user_id
    ), restored_users AS (
        UPDATE users SET status = 'NORMAL', updated_at = :now
        WHERE user_id = ANY(:user_ids)
          AND status = 'DEBT_USER'
          AND NOT EXISTS (
              SELECT 1 FROM installments i
              WHERE i.user_id = users.user_id AND i.status = 'OVERDUE'
          )
        RETURNING user_id
    ), status_changes AS (
        SELECT user_id, 'DEBT_USER' AS from_status, 'NORMAL' AS to_status,
               CAST(:cause AS jsonb) AS details
        FROM restored_users
    ), audited_users AS ("""  # noqa: S608 - a fixed fragment, no input
    + USER_STATUS_CHANGED
    + """), audited_plans AS ("""
    + insert_events(
        """
        SELECT :now, :actor, 'plan.completed', 'plan', id::text, user_id, '{}'::jsonb
        FROM completed_plans"""
    )
    + """
    )
    SELECT 'plan' AS kind, id::text AS entity_id FROM completed_plans
    UNION ALL
    SELECT 'user', user_id FROM restored_users
    """
)


@dataclass(frozen=True)
class Settled:
    plans_completed: list[int]
    users_restored: list[str]


def settle(
    executor: Executor,
    *,
    plan_ids: Iterable[int],
    user_ids: Iterable[str],
    now: datetime,
    actor: str,
    cause: dict[str, Any] | None = None,
) -> Settled:
    """Rule 4 for the plans and users a write may have paid off; ``cause`` goes into each
    restored user's event (a sweep's revert names the run)."""
    import json

    plans, users = sorted(set(plan_ids)), sorted(set(user_ids))
    if not plans and not users:
        return Settled([], [])
    rows = run(
        executor,
        _SETTLE,
        {
            "plan_ids": plans,
            "user_ids": users,
            "now": now,
            "actor": actor,
            "cause": json.dumps(cause or {}),
        },
    ).all()
    return Settled(
        plans_completed=sorted(int(row.entity_id) for row in rows if row.kind == "plan"),
        users_restored=sorted(str(row.entity_id) for row in rows if row.kind == "user"),
    )
