"""Refunds: idempotent creation (rule 5), lookups, and the commands' moves, which go
through rule 6 (``refund_states``), rule 7 (``refund_application``) and rule 4
(``settlement``) exactly as a webhook file's rows do."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from bnplctl.errors import Conflict, NotFound, Refused
from bnplctl.models import Plan, Refund, RefundStatus
from bnplctl.money import format_amount
from bnplctl.services import audit
from bnplctl.services.listing import ListRequest, Page, ordering, page
from bnplctl.sorting import REFUND_SORT


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
    from bnplctl.services import locks
    from bnplctl.services.users import get_user

    get_user(session, user_id)
    # The user's lock before the refunds table (the lock protocol's order): a batch chunk
    # holding the tables is waited for, not deadlocked with through the foreign key.
    locks.for_user_writes(session, [user_id])
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
    """approve | reject | cancel a PENDING refund (rule 6); an approval is applied to its
    plan (rule 7) and then rule 4 runs, exactly as for a webhook file's approval."""
    from bnplctl import clock
    from bnplctl.services import locks, refund_application, refund_states

    found = find_refund(session, ref)
    locks.for_user_writes(session, [found.user_id])
    now = clock.now()
    refund_states.create_work_tables(session)
    assert found.id is not None  # noqa: S101 - a stored refund has an id
    refund_states.add_command_move(
        session,
        refund_id=found.id,
        transaction_id=found.transaction_id,
        target=refund_states.COMMAND_TARGETS[command],
        note=reason,
    )
    refused = refund_states.move(
        session, round_number=1, source="command", file_id=None, now=now, actor=actor
    )
    if refused:
        raise Refused(f"refund {found.transaction_id} is {refused[0].current}: cannot {command} it")
    refund_application.apply_approved_and_settle(
        session, source="command", file_id=None, now=now, actor=actor
    )
    return get_refund(session, str(found.id))


def list_refunds(
    session: Session,
    *,
    user_id: str | None = None,
    status: RefundStatus | None = None,
    request: ListRequest = ListRequest(),  # noqa: B008 (frozen)
) -> Page[Refund]:
    """Oldest first unless sorted, fetched in batches."""
    query = select(Refund)
    if user_id is not None:
        query = query.where(Refund.user_id == user_id)
    if status is not None:
        query = query.where(Refund.status == status.value)
    fields = {name: col(getattr(Refund, name)) for name in REFUND_SORT}
    order = ordering(request.sort, fields, [col(Refund.id)], col(Refund.id))
    return page(session, query.order_by(*order), request)


def public_refund(refund: Refund) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": refund.id,
        "transaction_id": refund.transaction_id,
        "user_id": refund.user_id,
        "plan_id": refund.plan_id,
        "amount": format_amount(refund.amount),
        "status": refund.status,
        "reason": refund.reason,
        "decision_reason": refund.decision_reason,
        "merchant_reference": refund.merchant_reference,
        "processed_at": refund.processed_at.isoformat() if refund.processed_at else None,
        "created_at": refund.created_at.isoformat() if refund.created_at else None,
    }
    if refund.applied_amount is not None:
        shown["applied_amount"] = format_amount(refund.applied_amount)
        shown["payout_amount"] = format_amount(refund.payout_amount or Decimal(0))
    return shown
