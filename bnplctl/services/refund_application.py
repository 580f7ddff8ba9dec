"""Rule 7, the one place it is written: an approved refund is applied to its plan's
unpaid installments from the last one backwards, and the refund is COMPLETED.

The approvals of the transaction (``refunds_approved``, filled by rule 6's ``_MOVE``) are
applied together, in one statement, whichever channel made them: ``refunds approve``
(one row) or a webhook chunk (thousands). Per plan, the approved refunds share the
plan's unpaid balance in file order (by ``seq``, the row's place in its chunk; a
command's, in refund id order), as one approval per chunk would (a chunk's rounds keep
a plan's approvals in file order: ``importing/webhooks.py``): each installment, from
the last one back, is cut by what the refunds still have left after the later
installments; an installment cut to zero is PAID; what no installment takes is the
refund's ``payout_amount``. Each approval is audited once (``refund.status_changed``,
PENDING to COMPLETED, with the applied and payout amounts as strings). Returns what rule
4 must then look at: the plans with an installment paid off, and the owners of paid-off
installments that were OVERDUE.

The caller holds the locks of ``services/locks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bnplctl.services.audit import insert_events
from bnplctl.sql import Statement, run

if TYPE_CHECKING:
    from bnplctl.db import Executor

# Sibling CTEs read the state before the UPDATEs. No CTE is joined to another (the
# planner cannot estimate a CTE's rows, and a batch chunk runs with nested loops only).
#
# ``approvals``: what rule 6's ``_MOVE`` handed over (each refund with its owner, plan and
# amount), each beside its plan's last unpaid installment. An approval alone in its plan
# that this installment covers (``within_last``, nearly every one: a refund is usually
# smaller than an installment) is cut from it whole; that is what the general pass below
# gives it, without the sort. The other approvals and their plans' unpaid installments
# stand side by side in one sort, per plan the approvals first (in file order), then the
# installments from the last one back. ``running``, a running sum over that order of the
# refunds' amounts less the installments' dues, is for an approval what the approvals
# before it take, and for an installment what the plan's approvals have left once the
# installments after it are paid; ``due_later``, a sum over the rows after an approval,
# is what its plan has unpaid.
_APPLY = Statement(
    """
    WITH approvals AS (
        SELECT a.*, last.id AS last_id, last.amount_due AS last_due, last.status AS last_status,
               count(*) OVER (PARTITION BY a.plan_id) = 1
               AND a.amount <= last.amount_due AS within_last
        FROM refunds_approved a
        LEFT JOIN LATERAL (
            SELECT i.id, i.amount_due, i.status
            FROM installments i
            WHERE i.plan_id = a.plan_id AND i.status <> 'PAID'
            ORDER BY i.sequence DESC
            LIMIT 1
        ) last ON true
    ), approvals_and_unpaid AS (
        SELECT a.plan_id, 0 AS kind, a.seq AS place, a.refund_id, a.user_id, a.amount,
               a.line, a.event_id, a.occurred_at, a.merchant_reference, a.note,
               NULL::bigint AS installment_id, NULL::numeric AS amount_due,
               NULL::text AS status
        FROM approvals a
        WHERE a.within_last IS NOT TRUE
        UNION ALL
        SELECT i.plan_id, 1, -i.sequence, NULL, i.user_id, NULL, NULL, NULL, NULL, NULL, NULL,
               i.id, i.amount_due, i.status
        FROM installments i
        WHERE i.plan_id IN (SELECT plan_id FROM approvals WHERE within_last IS NOT TRUE)
          AND i.status <> 'PAID'
    ), balances AS (
        SELECT b.*,
               coalesce(sum(coalesce(b.amount, -b.amount_due)) OVER earlier, 0) AS running,
               coalesce(sum(b.amount_due) OVER later, 0) AS due_later
        FROM approvals_and_unpaid b
        WINDOW in_plan AS (PARTITION BY b.plan_id ORDER BY b.kind, b.place, b.refund_id),
               earlier AS (in_plan ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               later AS (in_plan ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
    ), cuts AS (
        SELECT last_id AS installment_id, plan_id, user_id, last_status AS status,
               last_due AS amount_due, amount AS cut
        FROM approvals
        WHERE within_last
        UNION ALL
        SELECT installment_id, plan_id, user_id, status, amount_due,
               least(amount_due, greatest(running, 0))
        FROM balances
        WHERE kind = 1
    ), reduced AS (
        UPDATE installments i
        SET amount_due = i.amount_due - c.cut,
            status = CASE WHEN i.amount_due = c.cut THEN 'PAID' ELSE i.status END,
            paid_at = CASE WHEN i.amount_due = c.cut THEN :now ELSE i.paid_at END
        FROM cuts c
        WHERE i.id = c.installment_id AND c.cut > 0
    ), paid_off AS (
        SELECT DISTINCT plan_id, CASE WHEN status = 'OVERDUE' THEN user_id END AS user_id
        FROM cuts
        WHERE cut = amount_due
    ), settled AS (
        SELECT refund_id, line, event_id, occurred_at, merchant_reference, note,
               amount AS applied
        FROM approvals
        WHERE within_last
        UNION ALL
        SELECT refund_id, line, event_id, occurred_at, merchant_reference, note,
               least(amount, greatest(due_later - running, 0))
        FROM balances
        WHERE kind = 0
    ), completed AS (
        UPDATE refunds r
        SET status = 'COMPLETED', applied_amount = s.applied,
            payout_amount = r.amount - s.applied, processed_at = :now, updated_at = :now,
            last_event_at = coalesce(s.occurred_at, r.last_event_at),
            merchant_reference = coalesce(s.merchant_reference, r.merchant_reference),
            decision_reason = s.note
        FROM settled s
        WHERE r.id = s.refund_id AND r.status = 'PENDING'
        RETURNING r.id, r.user_id, r.plan_id, r.applied_amount, r.payout_amount,
                  s.line, s.event_id, r.decision_reason
    ), audited AS ("""  # noqa: S608 - fixed fragments, no input
    + insert_events(
        """
        SELECT :now, :actor, 'refund.status_changed', 'refund', id::text, user_id,
               jsonb_strip_nulls(jsonb_build_object(
                   'from', 'PENDING', 'to', 'COMPLETED', 'source', CAST(:source AS text),
                   'applied_amount', applied_amount::text,
                   'payout_amount', payout_amount::text, 'plan_id', plan_id,
                   'file_id', CAST(:file_id AS bigint), 'line', line, 'event_id', event_id,
                   'decision_reason', decision_reason))
        FROM completed"""
    )
    + """
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
    rows = run(
        executor, _APPLY, {"source": source, "file_id": file_id, "now": now, "actor": actor}
    ).all()
    return PaidOff(
        plan_ids=sorted({int(row.plan_id) for row in rows}),
        overdue_owners=sorted({str(row.user_id) for row in rows if row.user_id is not None}),
    )


def apply_approved_and_settle(
    executor: Executor, *, source: str, file_id: int | None, now: datetime, actor: str
) -> None:
    """Rule 7 for the transaction's approvals, then rule 4 for what they paid off."""
    from bnplctl.services.settlement import settle

    paid_off = apply_approved(executor, source=source, file_id=file_id, now=now, actor=actor)
    settle(
        executor,
        plan_ids=paid_off.plan_ids,
        user_ids=paid_off.overdue_owners,
        now=now,
        actor=actor,
    )
