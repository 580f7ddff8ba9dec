"""Paying installments (rule 4): all-or-nothing, then plan completion and debt clearance."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from bnplctl import clock
from bnplctl.errors import NotFound, Refused
from bnplctl.models import Installment, InstallmentStatus
from bnplctl.services import audit
from bnplctl.services.plans import public_installment
from bnplctl.services.rules import complete_paid_plans, restore_cleared_users


def pay(session: Session, installment_ids: list[int], *, actor: str) -> dict[str, Any]:
    """Mark every installment PAID, or none of them."""
    wanted = sorted(set(installment_ids))
    locked = list(
        session.exec(
            select(Installment)
            .where(col(Installment.id).in_(wanted))
            .order_by(col(Installment.id))
            .with_for_update()
        ).all()
    )
    missing = sorted(set(wanted) - {installment.id for installment in locked})
    if missing:
        raise NotFound(f"installment {', '.join(map(str, missing))} not found")
    already_paid = [i.id for i in locked if i.status == InstallmentStatus.PAID.value]
    if already_paid:
        raise Refused(f"installment {', '.join(map(str, already_paid))} is already PAID")
    paid_at = clock.now()
    for installment in locked:
        previous = installment.status
        installment.status = InstallmentStatus.PAID.value
        installment.paid_at = paid_at
        audit.record(
            session,
            actor=actor,
            action="installment.paid",
            entity="installment",
            entity_id=str(installment.id),
            user_id=installment.user_id,
            details={
                "plan_id": installment.plan_id,
                "amount": str(installment.amount_due),
                "was": previous,
            },
        )
    session.flush()
    plans_completed = complete_paid_plans(session, sorted({i.plan_id for i in locked}), actor=actor)
    users_restored = restore_cleared_users(
        session, sorted({i.user_id for i in locked}), actor=actor
    )
    return {
        "installments": [public_installment(installment) for installment in locked],
        "plans_completed": plans_completed,
        "users_restored": users_restored,
    }
