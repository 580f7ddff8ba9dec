"""Rule 7, the one place it is written: an approved refund is applied to its plan's
unpaid installments from the last one backwards, and the refund is COMPLETED.

The approvals of the transaction (``refunds_approved``, filled by rule 6's ``MOVE``) are
applied together, in one statement, whichever channel made them: ``refunds approve``
(one row) or a webhook chunk (thousands). Per plan, the approved refunds share the
plan's unpaid balance in refund id order: each installment, from the last one back, is
cut by what the refunds still have left after the later installments; an installment cut
to zero is PAID; what no installment takes is the refund's ``payout_amount``. Each
approval is audited once (``refund.status_changed``, PENDING to COMPLETED, with the
applied and payout amounts as strings). Returns what rule 4 must then look at: the plans
with an installment paid off, and the owners of paid-off installments that were OVERDUE.

The caller holds the locks of ``services/locks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from bnplctl.db import Executor

# Sibling CTEs read the state before the UPDATEs. No CTE is joined to another (the
# planner cannot estimate a CTE's rows, and a batch chunk runs with nested loops only):
# what an approval needs of its plan's unpaid installments comes from one window over
# both, side by side (``approvals_and_unpaid``).
_APPLY = text(
    """
    WITH approved AS (
        SELECT r.id, r.user_id, r.plan_id, r.amount,
               a.line, a.event_id, a.occurred_at, a.merchant_reference, a.note,
               coalesce(sum(r.amount) OVER (
                   PARTITION BY r.plan_id ORDER BY r.id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before_me
        FROM refunds_approved a
        JOIN refunds r ON r.id = a.refund_id
        WHERE r.status = 'PENDING'
    ), refunded_per_plan AS (
        SELECT plan_id, sum(amount) AS refunded
        FROM approved
        WHERE plan_id IS NOT NULL
        GROUP BY plan_id
    ), unpaid AS (
        SELECT i.id, i.plan_id, i.user_id, i.status, i.amount_due, p.refunded,
               coalesce(sum(i.amount_due) OVER (
                   PARTITION BY i.plan_id ORDER BY i.sequence DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS due_after
        FROM installments i
        JOIN refunded_per_plan p ON p.plan_id = i.plan_id
        WHERE i.status <> 'PAID'
    ), cuts AS (
        SELECT id, least(amount_due, greatest(refunded - due_after, 0)) AS cut
        FROM unpaid
    ), reduced AS (
        UPDATE installments i
        SET amount_due = i.amount_due - c.cut,
            status = CASE WHEN i.amount_due = c.cut THEN 'PAID' ELSE i.status END,
            paid_at = CASE WHEN i.amount_due = c.cut THEN :now ELSE i.paid_at END
        FROM cuts c
        WHERE i.id = c.id AND c.cut > 0
        RETURNING i.id
    ), paid_off AS (
        SELECT DISTINCT plan_id, CASE WHEN status = 'OVERDUE' THEN user_id END AS user_id
        FROM unpaid
        WHERE refunded - due_after >= amount_due
    ), approvals_and_unpaid AS (
        SELECT id, plan_id, amount, line, event_id, occurred_at, merchant_reference, note,
               before_me, NULL::numeric AS amount_due
        FROM approved
        UNION ALL
        SELECT NULL, plan_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, amount_due
        FROM unpaid
    ), with_plan_unpaid AS (
        SELECT *, coalesce(sum(amount_due) OVER (PARTITION BY plan_id), 0) AS plan_unpaid
        FROM approvals_and_unpaid
    ), settled AS MATERIALIZED (
        SELECT id, amount, line, event_id, occurred_at, merchant_reference, note,
               least(amount, greatest(plan_unpaid - before_me, 0)) AS applied
        FROM with_plan_unpaid
        WHERE id IS NOT NULL
    ), completed AS (
        UPDATE refunds r
        SET status = 'COMPLETED', applied_amount = s.applied,
            payout_amount = r.amount - s.applied, processed_at = :now, updated_at = :now,
            last_event_at = coalesce(s.occurred_at, r.last_event_at),
            merchant_reference = coalesce(s.merchant_reference, r.merchant_reference),
            reason = coalesce(s.note, r.reason)
        FROM settled s
        WHERE r.id = s.id
        RETURNING r.id, r.user_id, r.plan_id, r.applied_amount, r.payout_amount,
                  s.line, s.event_id
    ), audited AS (
        INSERT INTO audit_events (occurred_at, actor, action, entity, entity_id, user_id,
                                  details)
        SELECT :now, :actor, 'refund.status_changed', 'refund', id::text, user_id,
               jsonb_build_object(
                   'from', 'PENDING', 'to', 'COMPLETED', 'source', :source,
                   'applied_amount', applied_amount::text,
                   'payout_amount', payout_amount::text)
               || jsonb_strip_nulls(jsonb_build_object(
                   'plan_id', plan_id, 'file_id', CAST(:file_id AS bigint), 'line', line,
                   'event_id', event_id))
        FROM completed
    ), emptied AS (
        DELETE FROM refunds_approved
    )
    SELECT plan_id, user_id FROM paid_off
    """
)


@dataclass(frozen=True)
class PaidOff:
    plan_ids: list[int]
    overdue_owners: list[str]


def apply_approved(
    executor: Executor, *, source: str, file_id: int | None, now: datetime, actor: str
) -> PaidOff:
    """Apply the transaction's ``refunds_approved`` (rule 7), emptying it."""
    rows = executor.execute(
        _APPLY, {"source": source, "file_id": file_id, "now": now, "actor": actor}
    ).all()
    return PaidOff(
        plan_ids=sorted({int(row.plan_id) for row in rows}),
        overdue_owners=sorted({str(row.user_id) for row in rows if row.user_id is not None}),
    )


def apply_approved_and_settle(
    executor: Executor, *, source: str, file_id: int | None, now: datetime, actor: str
) -> None:
    """Rule 7 for the transaction's approvals, then rule 4 for what they paid off."""
    from bnplctl.services.debt_status import settle

    paid_off = apply_approved(executor, source=source, file_id=file_id, now=now, actor=actor)
    settle(
        executor,
        plan_ids=paid_off.plan_ids,
        user_ids=paid_off.overdue_owners,
        now=now,
        actor=actor,
    )
