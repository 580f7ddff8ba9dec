"""Plans and their installments (rules 1 and 2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from bnplctl import pii
from bnplctl.errors import DebtUserRefused, NotFound
from bnplctl.models import Installment, InstallmentStatus, Plan, PlanStatus, User, UserStatus
from bnplctl.money import format_amount
from bnplctl.services import audit
from bnplctl.services.installment_schedule import schedule
from bnplctl.services.listing import ListRequest, Page, in_batches, ordering, page
from bnplctl.sorting import INSTALLMENT_SORT, PLAN_SORT
from bnplctl.validators import user_not_found


def lock_user(session: Session, user_id: str) -> User:
    """The user under the lock protocol (``services/locks.py``): a sweep running now
    finishes first, and so does any other writer for this user; then the user as committed."""
    from bnplctl.services import locks

    if not locks.for_user_writes(session, [user_id]):
        raise NotFound(user_not_found(user_id))
    user = session.exec(select(User).where(User.user_id == user_id)).one()
    session.refresh(user)
    return user


def create_plan(
    session: Session,
    *,
    user_id: str,
    total: Decimal,
    count: int,
    start: date,
    merchant_reference: str | None,
    actor: str,
) -> Plan:
    """Rule 2 under a row lock on the user, then the plan and its installments."""
    rows = schedule(total, count, start)
    user = lock_user(session, user_id)
    if user.status == UserStatus.DEBT_USER.value:
        raise DebtUserRefused()
    plan = Plan(
        user_id=user_id,
        total_amount=total,
        installment_count=count,
        start_date=start,
        merchant_reference=merchant_reference,
    )
    session.add(plan)
    session.flush()
    assert plan.id is not None  # noqa: S101 - assigned by the flush
    session.add_all(
        Installment(
            plan_id=plan.id,
            user_id=user_id,
            sequence=row.sequence,
            original_amount=row.amount_due,
            amount_due=row.amount_due,
            due_date=row.due_date,
        )
        for row in rows
    )
    audit.record(
        session,
        actor=actor,
        action="plan.created",
        entity="plan",
        entity_id=str(plan.id),
        user_id=user_id,
        details={"total_amount": format_amount(total), "installments": count},
    )
    session.flush()
    return plan


def get_plan(session: Session, plan_id: int) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFound(f"plan {plan_id} not found")
    return plan


def list_plans(
    session: Session,
    *,
    user_id: str | None = None,
    status: PlanStatus | None = None,
    request: ListRequest = ListRequest(),  # noqa: B008 (frozen)
) -> Page[Plan]:
    """Oldest first unless sorted, fetched in batches."""
    query = select(Plan)
    if user_id is not None:
        query = query.where(Plan.user_id == user_id)
    if status is not None:
        query = query.where(Plan.status == status.value)
    fields = {name: col(getattr(Plan, name)) for name in PLAN_SORT}
    order = ordering(request.sort, fields, [col(Plan.id)], col(Plan.id))
    return page(session, query.order_by(*order), request)


def list_installments(
    session: Session,
    *,
    user_id: str | None = None,
    plan_id: int | None = None,
    status: InstallmentStatus | None = None,
    due_before: date | None = None,
    due_after: date | None = None,
    request: ListRequest = ListRequest(),  # noqa: B008 (frozen)
) -> Page[Installment]:
    """By due date (then id) unless sorted, fetched in batches."""
    query = select(Installment)
    if user_id is not None:  # through the user's plans: index lookups, whatever the size
        query = query.where(
            col(Installment.plan_id).in_(select(Plan.id).where(Plan.user_id == user_id))
        )
    if plan_id is not None:
        query = query.where(Installment.plan_id == plan_id)
    if status is not None:
        query = query.where(Installment.status == status.value)
    if due_before is not None:
        query = query.where(col(Installment.due_date) < due_before)
    if due_after is not None:
        query = query.where(col(Installment.due_date) > due_after)
    fields = {name: col(getattr(Installment, name)) for name in INSTALLMENT_SORT}
    default = [col(Installment.due_date), col(Installment.id)]
    order = ordering(request.sort, fields, default, col(Installment.id))
    return page(session, query.order_by(*order), request)


def iter_public_plans(session: Session, plans: Iterable[Plan]) -> Iterator[dict[str, Any]]:
    """``public_plans`` a batch at a time: an export of every plan takes flat memory."""
    return in_batches(plans, lambda batch: public_plans(session, batch))


def public_installment(installment: Installment) -> dict[str, Any]:
    return {
        "id": installment.id,
        "plan_id": installment.plan_id,
        "user_id": installment.user_id,
        "sequence": installment.sequence,
        "amount_due": format_amount(installment.amount_due),
        "due_date": installment.due_date.isoformat(),
        "status": installment.status,
        "paid_at": installment.paid_at.isoformat() if installment.paid_at else None,
    }


def public_plans(session: Session, plans: list[Plan]) -> list[dict[str, Any]]:
    """Plans with their (masked) user and installments, in two queries whatever the count."""
    if not plans:
        return []
    plan_ids = [plan.id for plan in plans]
    user_ids = {plan.user_id for plan in plans}
    installments: dict[int, list[dict[str, Any]]] = {plan_id: [] for plan_id in plan_ids if plan_id}
    for installment in session.exec(
        select(Installment)
        .where(col(Installment.plan_id).in_(plan_ids))
        .order_by(col(Installment.plan_id), col(Installment.sequence))
    ):
        installments[installment.plan_id].append(public_installment(installment))
    users = {
        user.user_id: user
        for user in session.exec(select(User).where(col(User.user_id).in_(user_ids)))
    }
    return [
        {
            "id": plan.id,
            "user": {
                "user_id": plan.user_id,
                "full_name": users[plan.user_id].full_name,
                "phone_number": pii.mask_phone(users[plan.user_id].phone_e164),
            },
            "total_amount": format_amount(plan.total_amount),
            "status": plan.status,
            "merchant_reference": plan.merchant_reference,
            "start_date": plan.start_date.isoformat(),
            "installments": installments[plan.id] if plan.id else [],
            "created_at": plan.created_at.isoformat() if plan.created_at else None,
        }
        for plan in plans
    ]


def find_by_reference(session: Session, user_id: str, merchant_reference: str) -> Plan | None:
    return session.exec(
        select(Plan).where(Plan.user_id == user_id, Plan.merchant_reference == merchant_reference)
    ).first()
