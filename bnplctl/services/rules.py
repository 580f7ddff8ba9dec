"""The set-based SQL of rules 4 and 7, and the audited update they write through.

Plain SQL on any SQLAlchemy connection or session: ``refunds approve`` and
``installments pay`` run it inside their ORM sessions, and ``webhooks ingest`` on a Core
connection, so that a batch command never loads the ORM and the models (a third of a
second of every start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnplctl.db import Executor


def audited_update(
    session: Executor,
    update: str,
    *,
    action: str,
    entity: str,
    params: dict[str, Any],
    actor: str,
    details: dict[str, Any] | None = None,
) -> list[str]:
    """Run ``update`` (an UPDATE … RETURNING ``entity_id`` and ``user_id``) and write one
    audit event per changed row in the same statement; returns the entity ids."""
    import json

    from sqlalchemy import text

    statement = text(
        f"WITH changed AS ({update}), audited AS ("  # noqa: S608 - callers pass constant SQL
        " INSERT INTO audit_events (actor, action, entity, entity_id, user_id, details)"
        " SELECT :actor, :action, :entity, entity_id, user_id, CAST(:details AS jsonb)"
        " FROM changed) SELECT entity_id FROM changed"
    )
    audit_fields = {"actor": actor, "action": action, "entity": entity}
    rows = session.execute(
        statement, params | audit_fields | {"details": json.dumps(details or {})}
    )
    return [str(row[0]) for row in rows]


def complete_paid_plans(session: Executor, plan_ids: list[int], *, actor: str) -> list[int]:
    """Rule 4: ACTIVE plans among ``plan_ids`` whose installments are all PAID become COMPLETED."""
    if not plan_ids:
        return []
    completed = audited_update(
        session,
        "UPDATE plans SET status = 'COMPLETED', updated_at = now()"
        " WHERE id = ANY(:ids) AND status = 'ACTIVE' AND NOT EXISTS ("
        " SELECT 1 FROM installments i WHERE i.plan_id = plans.id AND i.status <> 'PAID')"
        " RETURNING id::text AS entity_id, user_id",
        action="plan.completed",
        entity="plan",
        params={"ids": plan_ids},
        actor=actor,
    )
    return sorted(int(plan_id) for plan_id in completed)


def restore_cleared_users(session: Executor, user_ids: list[str], *, actor: str) -> list[str]:
    """Rule 4: DEBT_USERs among ``user_ids`` with no OVERDUE installment left become NORMAL."""
    if not user_ids:
        return []
    restored = audited_update(
        session,
        "UPDATE users SET status = 'NORMAL', updated_at = now()"
        " WHERE user_id = ANY(:ids) AND status = 'DEBT_USER' AND NOT EXISTS ("
        " SELECT 1 FROM installments i WHERE i.user_id = users.user_id AND i.status = 'OVERDUE')"
        " RETURNING user_id AS entity_id, user_id",
        action="user.status_changed",
        entity="user",
        params={"ids": user_ids},
        actor=actor,
        details={"from": "DEBT_USER", "to": "NORMAL"},
    )
    return sorted(restored)


# Rule 7 for many refunds at once, as CTEs that follow a CTE ``approved`` with at least
# (id, user_id, plan_id, amount, before_me), ``before_me`` being what the plan's earlier
# approved refunds take first. Per plan, the approved refunds share the plan's unpaid
# balance: each installment, from the last one backwards, is cut by what the refunds
# still have left after the later installments; ``settled`` is each ``approved`` row
# with what it ``applied``; what no installment takes is paid out. Sibling CTEs read
# the state before the UPDATE. ``refunds approve`` and a webhook file of thousands of
# approvals share these statements. ``paid_off`` names the plans with an installment
# cut to zero, and the owners of such installments that were OVERDUE: only they can
# change under rule 4. (Correlated sums, not joins of CTEs: the planner cannot
# estimate a CTE's rows and would loop over them.)
RULE7_CTES = (
    ", per_plan AS ("
    " SELECT plan_id, sum(amount) AS refunded FROM approved"
    " WHERE plan_id IS NOT NULL GROUP BY plan_id"
    "), unpaid AS ("
    " SELECT i.id, i.plan_id, i.user_id, i.status, i.amount_due, p.refunded,"
    "  coalesce(sum(i.amount_due) OVER (PARTITION BY i.plan_id ORDER BY i.sequence DESC"
    "   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS later"
    " FROM installments i JOIN per_plan p ON p.plan_id = i.plan_id WHERE i.status <> 'PAID'"
    "), cuts AS ("
    " SELECT id, least(amount_due, greatest(refunded - later, 0)) AS cut FROM unpaid"
    "), reduced AS ("
    " UPDATE installments i SET amount_due = i.amount_due - c.cut,"
    "  status = CASE WHEN i.amount_due = c.cut THEN 'PAID' ELSE i.status END,"
    "  paid_at = CASE WHEN i.amount_due = c.cut THEN now() ELSE i.paid_at END"
    " FROM cuts c WHERE i.id = c.id AND c.cut > 0 RETURNING i.id"
    "), paid_off AS ("
    " SELECT DISTINCT plan_id, CASE WHEN status = 'OVERDUE' THEN user_id END AS user_id"
    " FROM unpaid WHERE refunded - later >= amount_due"
    "), settled AS MATERIALIZED ("
    " SELECT a.*, least(a.amount, greatest(coalesce(("
    "   SELECT sum(i.amount_due) FROM installments i"
    "   WHERE i.plan_id = a.plan_id AND i.status <> 'PAID'), 0) - a.before_me, 0)) AS applied"
    " FROM approved a"
    ")"
)
# What an approved refund's plan has taken before it: the refunds approved with it, in id order.
BEFORE_ME = (
    "coalesce(sum(amount) OVER (PARTITION BY plan_id ORDER BY id"
    " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)"
)


def settle_plans_and_users(
    session: Executor, paid_off: list[tuple[int, str | None]], *, actor: str
) -> None:
    """Rule 4 after refunds paid installments off: (plan_id, owner if it was OVERDUE)."""
    complete_paid_plans(session, sorted({int(plan_id) for plan_id, _ in paid_off}), actor=actor)
    owners = sorted({str(user_id) for _, user_id in paid_off if user_id is not None})
    restore_cleared_users(session, owners, actor=actor)
