"""Refunds: idempotent creation (rule 5), the forward-only state machine (rule 6), and
applying approved refunds to their plans from the last installment backwards (rule 7).

Applying is set-based, so the CLI's ``refunds approve`` and a webhook file of
thousands of approvals run the same statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from bnplctl.db import LIST_BATCH
from bnplctl.errors import Conflict, NotFound, Refused
from bnplctl.models import Plan, Refund, RefundStatus
from bnplctl.money import format_amount
from bnplctl.services import audit
from bnplctl.services.rules import BEFORE_ME, RULE7_CTES, settle_plans_and_users

FINAL = frozenset({RefundStatus.REJECTED, RefundStatus.CANCELLED, RefundStatus.COMPLETED})
# Rule 6: the only moves a command may make.
COMMAND_TARGETS = {
    "approve": RefundStatus.APPROVED,
    "reject": RefundStatus.REJECTED,
    "cancel": RefundStatus.CANCELLED,
}


def create_refund(
    session: Session,
    *,
    user_id: str,
    transaction_id: str,
    amount: Decimal,
    plan_id: int | None,
    reason: str | None,
    actor: str,
) -> tuple[Refund, bool]:
    """A PENDING refund, or the existing one for this transaction_id (rule 5).

    Returns (refund, existed). Insert-first: two racing creators make one refund.
    """
    from bnplctl.services.users import get_user

    get_user(session, user_id)
    if plan_id is not None:
        plan = session.get(Plan, plan_id)
        if plan is None:
            raise NotFound(f"plan {plan_id} not found")
        if plan.user_id != user_id:
            raise Refused(f"plan {plan_id} does not belong to user {user_id}")
    inserted = session.execute(
        text(
            "INSERT INTO refunds (user_id, plan_id, transaction_id, amount, reason)"
            " VALUES (:user_id, :plan_id, :transaction_id, :amount, :reason)"
            " ON CONFLICT (transaction_id) DO NOTHING RETURNING id"
        ),
        {
            "user_id": user_id,
            "plan_id": plan_id,
            "transaction_id": transaction_id,
            "amount": amount,
            "reason": reason,
        },
    ).scalar_one_or_none()
    if inserted is None:
        existing = find_refund(session, transaction_id)
        same = (existing.user_id, existing.amount, existing.plan_id) == (user_id, amount, plan_id)
        if not same:
            raise Conflict(
                f"refund {transaction_id} already exists with a different user, amount or plan"
            )
        return existing, True
    audit.record(
        session,
        actor=actor,
        action="refund.created",
        entity="refund",
        entity_id=str(inserted),
        user_id=user_id,
        details={"transaction_id": transaction_id, "amount": format_amount(amount)},
    )
    session.flush()
    return get_refund(session, str(inserted)), False


def find_refund(session: Session, ref: str, *, lock: bool = False) -> Refund:
    """By transaction_id first, then by numeric id."""
    query = select(Refund).where(Refund.transaction_id == ref)
    refund = session.exec(query.with_for_update() if lock else query).first()
    if refund is None and ref.isdigit():
        query = select(Refund).where(Refund.id == int(ref))
        refund = session.exec(query.with_for_update() if lock else query).first()
    if refund is None:
        raise NotFound(f"refund {ref} not found")
    return refund


def get_refund(session: Session, ref: str) -> Refund:
    refund = find_refund(session, ref)
    session.refresh(refund)
    return refund


def transition(
    session: Session, ref: str, command: str, *, reason: str | None, actor: str
) -> Refund:
    """approve | reject | cancel a PENDING refund; approving also applies it (rule 7)."""
    refund = find_refund(session, ref, lock=True)
    target = COMMAND_TARGETS[command]
    current = RefundStatus(refund.status)
    if current is not RefundStatus.PENDING:
        raise Refused(f"refund {refund.transaction_id} is {current.value}: cannot {command} it")
    session.execute(
        text(
            "UPDATE refunds SET status = :target, processed_at = now(), updated_at = now(),"
            " reason = coalesce(:reason, reason) WHERE id = :id"
        ),
        {"target": target.value, "reason": reason, "id": refund.id},
    )
    audit.record(
        session,
        actor=actor,
        action="refund.status_changed",
        entity="refund",
        entity_id=str(refund.id),
        user_id=refund.user_id,
        details={"from": current.value, "to": target.value, "source": "command"},
    )
    session.flush()
    if target is RefundStatus.APPROVED:
        assert refund.id is not None  # noqa: S101 - a stored refund has an id
        apply_refunds(session, [refund.id], actor=actor)
    session.refresh(refund)
    return refund


_LOCK_UNPAID = text(
    "SELECT i.id FROM installments i JOIN refunds r ON r.plan_id = i.plan_id"
    " WHERE r.id = ANY(:ids) AND r.status = 'APPROVED' AND i.status <> 'PAID'"
    " ORDER BY i.id FOR UPDATE OF i"
)

_APPLY = text(
    "WITH approved AS ("  # noqa: S608 - composed of this module's constants only
    f" SELECT id, user_id, plan_id, amount, {BEFORE_ME} AS before_me"
    " FROM refunds WHERE id = ANY(:ids) AND status = 'APPROVED'"
    f"){RULE7_CTES}, completed AS ("
    " UPDATE refunds r SET status = 'COMPLETED', applied_amount = s.applied,"
    "  payout_amount = r.amount - s.applied, processed_at = now(), updated_at = now()"
    " FROM settled s WHERE r.id = s.id"
    " RETURNING r.id, r.user_id, r.plan_id, r.applied_amount, r.payout_amount"
    "), audited AS ("
    " INSERT INTO audit_events (actor, action, entity, entity_id, user_id, details)"
    " SELECT :actor, 'refund.applied', 'refund', id::text, user_id, jsonb_build_object("
    "  'plan_id', plan_id, 'applied_amount', applied_amount, 'payout_amount', payout_amount)"
    " FROM completed"
    ") SELECT plan_id, user_id FROM paid_off"
)


def apply_refunds(session: Session, refund_ids: list[int], *, actor: str) -> None:
    """Rule 7 for APPROVED refunds, then rule 4 (plan completion, users back to NORMAL)."""
    if not refund_ids:
        return
    session.execute(_LOCK_UNPAID, {"ids": refund_ids})
    paid_off = session.execute(_APPLY, {"ids": refund_ids, "actor": actor}).all()
    settle_plans_and_users(session, [(row.plan_id, row.user_id) for row in paid_off], actor=actor)


def list_refunds(
    session: Session, *, user_id: str | None, status: RefundStatus | None, limit: int
) -> Iterator[Refund]:
    """Oldest first, fetched in batches."""
    query = select(Refund)
    if user_id is not None:
        query = query.where(Refund.user_id == user_id)
    if status is not None:
        query = query.where(Refund.status == status.value)
    query = query.order_by(col(Refund.id)).limit(limit)
    return iter(session.exec(query.execution_options(yield_per=LIST_BATCH)))


def public_refund(refund: Refund) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": refund.id,
        "transaction_id": refund.transaction_id,
        "user_id": refund.user_id,
        "plan_id": refund.plan_id,
        "amount": format_amount(refund.amount),
        "status": refund.status,
        "reason": refund.reason,
        "merchant_reference": refund.merchant_reference,
        "processed_at": refund.processed_at.isoformat() if refund.processed_at else None,
        "created_at": refund.created_at.isoformat() if refund.created_at else None,
    }
    if refund.applied_amount is not None:
        shown["applied_amount"] = format_amount(refund.applied_amount)
        shown["payout_amount"] = format_amount(refund.payout_amount or Decimal(0))
    return shown
