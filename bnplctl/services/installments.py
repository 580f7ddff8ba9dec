"""Paying installments from a command (``installments pay``): its payments staged as one
chunk of rule 10 and applied by the statements a payments file runs
(``services/payments.py``: ``stage_rows``, ``apply_chunk``), under the command's locks of
``services/locks.py``; then the statement's outcome told the command's way."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from bnplctl import clock
from bnplctl.errors import NotFound, Refused
from bnplctl.models import Installment
from bnplctl.money import format_amount
from bnplctl.services import locks
from bnplctl.services import payments as rule10
from bnplctl.services.plans import public_installment

COMMAND_SOURCE = "command"


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
    now = clock.now()
    # One row per installment, as a file's chunk: seq, line, reference, amount (none: all
    # that is due), user_id (the installment's owner, found by staging), installment_id,
    # paid_at (none: the unit's now), then kind, original_reference, note (a payment's:
    # none).
    staged = rule10.stage_rows(
        session,
        rule10.copy_data(
            (n, n + 1, reference, amount, None, installment, None, None, None, None)
            for n, installment in enumerate(wanted)
        ),
    )
    unknown = [wanted[row.line - 1] for row in staged.refused]  # unknown_installment only
    if unknown:
        raise NotFound(f"installment {', '.join(map(str, unknown))} not found")
    locks.for_user_writes(session, rule10.staged_payers(session))
    if reference is not None:
        locks.for_reference(session, f"payment:{reference}")
    applied = rule10.apply_chunk(
        session, staged=staged, source=COMMAND_SOURCE, now=now, actor=actor
    )
    if applied.not_applied:
        return _answer_not_applied(session, wanted, applied.not_applied, amount)
    installments = session.exec(
        select(Installment)
        .where(col(Installment.id).in_(wanted))
        .order_by(col(Installment.id))
        .execution_options(populate_existing=True)
    ).all()
    return {
        "installments": [public_installment(installment) for installment in installments],
        "payments": rule10.payments_by_id(session, applied.payment_ids),
        "plans_completed": applied.settled.plans_completed,
        "users_restored": applied.settled.users_restored,
    }


def _answer_not_applied(
    session: Session,
    wanted: list[int],
    not_applied: list[rule10.NotApplied],
    amount: Decimal | None,
) -> dict[str, Any]:
    """What the command says of payments rule 10 did not apply (all or none: any such row
    is refused, which rolls the unit back): a duplicate returns the first payment; a
    conflict, an installment with nothing due (PAID) or an overpayment is refused."""
    first = not_applied[0]
    if first.outcome == "duplicate":  # one installment, one reference: the only row
        installment = session.get(Installment, wanted[0], populate_existing=True)
        assert installment is not None  # noqa: S101 - staged: it exists
        return {
            "installments": [public_installment(installment)],
            "payments": rule10.payments_by_id(session, [first.earlier] if first.earlier else []),
            "plans_completed": [],
            "users_restored": [],
            "duplicate": True,
        }
    if first.outcome == "conflict":
        raise Refused(
            f"payment reference {first.reference} was already used for another payment"
            f" (payment {first.earlier}); nothing was paid"
        )
    nothing_due = [wanted[row.line - 1] for row in not_applied if row.due == 0]
    if nothing_due:
        raise Refused(f"installment {', '.join(map(str, nothing_due))} is already PAID")
    due = first.due if first.due is not None else Decimal(0)
    raise Refused(
        f"overpayment: {format_amount(amount or due)} is more than the"
        f" {format_amount(due)} due on installment {wanted[first.line - 1]}; nothing was paid"
    )
