"""Paying installments from a command (``installments pay``): each payment a record of
rule 10, then rule 4 (plan completion, debt clearance), under the lock protocol of
``services/locks.py``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from bnplctl import clock
from bnplctl.errors import NotFound, Refused
from bnplctl.models import Installment, InstallmentStatus
from bnplctl.money import format_amount
from bnplctl.services import locks
from bnplctl.services.payments import PaymentRequest, apply_round, payments_by_id
from bnplctl.services.plans import public_installment
from bnplctl.services.settlement import settle

COMMAND_SOURCE = "command"

_LAST_PAYMENT_OF = text(
    "SELECT max(payment_id) FROM payment_allocations WHERE installment_id = :installment"
)
_BY_REFERENCE = text(
    "SELECT id, user_id, installment_id, amount FROM payments WHERE reference = :reference"
)


def pay(
    session: Session,
    installment_ids: list[int],
    *,
    actor: str,
    amount: Decimal | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Pay every installment in full, or none of them; with ``amount`` (one installment),
    part of it. Each installment paid is one payment (rule 10); with ``reference`` (one
    installment) the payment is idempotent by it: the same request again returns the
    first payment and writes nothing, another request with it is refused."""
    wanted = sorted(set(installment_ids))
    if (amount is not None or reference is not None) and len(wanted) != 1:
        raise ValueError("an amount or a reference goes with one installment")
    owners = session.execute(
        text("SELECT id, user_id FROM installments WHERE id = ANY(:ids)"), {"ids": wanted}
    ).all()
    missing = sorted(set(wanted) - {int(row.id) for row in owners})
    if missing:
        raise NotFound(f"installment {', '.join(map(str, missing))} not found")
    locks.for_user_writes(session, [str(row.user_id) for row in owners])
    if reference is not None:
        earlier = _earlier_payment(session, reference, wanted[0], amount)
        if earlier is not None:
            return earlier
    current = list(
        session.exec(
            select(Installment).where(col(Installment.id).in_(wanted)).order_by(col(Installment.id))
        ).all()
    )
    already_paid = [i.id for i in current if i.status == InstallmentStatus.PAID.value]
    if already_paid:
        raise Refused(f"installment {', '.join(map(str, already_paid))} is already PAID")
    if amount is not None and amount > current[0].amount_due:
        raise Refused(
            f"overpayment: {format_amount(amount)} is more than the"
            f" {format_amount(current[0].amount_due)} due on installment {current[0].id};"
            " nothing was paid"
        )
    now = clock.now()
    payment_ids: list[int] = []
    plans: set[int] = set()
    owners_paid: set[str] = set()
    # One payment per user per round (rule 10's statement); a command paying several
    # installments of one user runs as many rounds.
    pending = list(current)
    while pending:
        round_: list[PaymentRequest] = []
        seen: set[str] = set()
        pending_next: list[Installment] = []
        for installment in pending:
            if installment.user_id in seen:
                pending_next.append(installment)
                continue
            seen.add(installment.user_id)
            round_.append(
                PaymentRequest(
                    line=len(round_) + 1,
                    reference=reference,
                    amount=amount if amount is not None else installment.amount_due,
                    user_id=installment.user_id,
                    installment_id=installment.id,
                    paid_at=now,
                    source=COMMAND_SOURCE,
                )
            )
        result = apply_round(session, round_, now=now, actor=actor)
        if result.overpaid:  # cannot happen under the user locks: what is due was read above
            raise Refused("overpayment: the installments changed while paying; nothing was paid")
        payment_ids += result.payment_ids.values()
        plans.update(result.plans_paid_off)
        owners_paid.update(result.overdue_owners)
        pending = pending_next
    settled = settle(
        session,
        plan_ids=plans,
        user_ids=owners_paid,
        now=now,
        actor=actor,
    )
    for installment in current:
        session.refresh(installment)
    return {
        "installments": [public_installment(installment) for installment in current],
        "payments": payments_by_id(session, payment_ids),
        "plans_completed": settled.plans_completed,
        "users_restored": settled.users_restored,
    }


def _earlier_payment(
    session: Session, reference: str, installment_id: int, amount: Decimal | None
) -> dict[str, Any] | None:
    """The first result of a payment with ``reference``, when this request repeats it;
    ``None`` when the reference is new. Another request with it is refused (exit 3)."""
    locks.for_reference(session, f"payment:{reference}")
    row = session.execute(_BY_REFERENCE, {"reference": reference}).one_or_none()
    if row is None:
        return None
    if amount is None:  # "all that is due": the earlier payment must have paid it off
        last = session.execute(_LAST_PAYMENT_OF, {"installment": installment_id}).scalar()
        full = (
            last == row.id
            and session.execute(
                text("SELECT status = 'PAID' FROM installments WHERE id = :id"),
                {"id": installment_id},
            ).scalar()
        )
        same = row.installment_id == installment_id and bool(full)
    else:
        same = row.installment_id == installment_id and amount == row.amount
    if not same:
        raise Refused(
            f"payment reference {reference} was already used for another payment"
            f" (payment {row.id}); nothing was paid"
        )
    installment = session.get(Installment, installment_id)
    assert installment is not None  # noqa: S101 - found under the user's lock above
    return {
        "installments": [public_installment(installment)],
        "payments": payments_by_id(session, [int(row.id)]),
        "plans_completed": [],
        "users_restored": [],
        "duplicate": True,
    }
