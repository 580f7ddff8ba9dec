"""Paying installments in full: all or nothing, then rule 4 (plan completion, debt
clearance), under the lock protocol of ``services/locks.py``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from bnplctl import clock
from bnplctl.errors import NotFound, Refused
from bnplctl.models import Installment, InstallmentStatus
from bnplctl.services import locks
from bnplctl.services.debt_status import settle
from bnplctl.services.plans import public_installment

_PAY = text(
    """
    WITH paid AS (
        UPDATE installments SET status = 'PAID', paid_at = :now
        WHERE id = ANY(:ids) AND status <> 'PAID'
        RETURNING id, plan_id, user_id, amount_due
    ), audited AS (
        INSERT INTO audit_events (occurred_at, actor, action, entity, entity_id, user_id,
                                  details)
        SELECT :now, :actor, 'installment.paid', 'installment', p.id::text, p.user_id,
               jsonb_build_object('plan_id', p.plan_id, 'amount', p.amount_due::text,
                                  'was', i.status)
        FROM paid p JOIN installments i ON i.id = p.id
    )
    SELECT id FROM paid
    """
)


def pay(session: Session, installment_ids: list[int], *, actor: str) -> dict[str, Any]:
    """Mark every installment PAID, or none of them."""
    wanted = sorted(set(installment_ids))
    owners = session.execute(
        text("SELECT id, user_id FROM installments WHERE id = ANY(:ids)"), {"ids": wanted}
    ).all()
    missing = sorted(set(wanted) - {int(row.id) for row in owners})
    if missing:
        raise NotFound(f"installment {', '.join(map(str, missing))} not found")
    locks.for_user_writes(session, [str(row.user_id) for row in owners])
    current = list(
        session.exec(
            select(Installment).where(col(Installment.id).in_(wanted)).order_by(col(Installment.id))
        ).all()
    )
    already_paid = [i.id for i in current if i.status == InstallmentStatus.PAID.value]
    if already_paid:
        raise Refused(f"installment {', '.join(map(str, already_paid))} is already PAID")
    now = clock.now()
    session.execute(_PAY, {"ids": wanted, "now": now, "actor": actor})
    settled = settle(
        session,
        plan_ids=[i.plan_id for i in current],
        user_ids=[i.user_id for i in current],
        now=now,
        actor=actor,
    )
    for installment in current:
        session.refresh(installment)
    return {
        "installments": [public_installment(installment) for installment in current],
        "plans_completed": settled.plans_completed,
        "users_restored": settled.users_restored,
    }
