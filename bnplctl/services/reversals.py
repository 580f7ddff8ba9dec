"""Reversing a payment from a command (``payments reverse``, rule 12): the reversal
staged as a one-row chunk and applied by the statements a payments file runs
(``services/payments.py``: ``stage_rows``, ``apply_chunk``), under the command's locks of
``services/locks.py``; then the statement's outcome told the command's way."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bnplctl.errors import NotFound, Refused
from bnplctl.money import format_amount
from bnplctl.services import locks
from bnplctl.services import payments as rules

if TYPE_CHECKING:
    from bnplctl.db import Executor

COMMAND_SOURCE = "command"


def reverse(
    executor: Executor,
    payment_reference: str,
    *,
    reference: str,
    amount: Decimal | None,
    reason: str | None,
    now: datetime,
    actor: str,
    grace_days: int,
) -> dict[str, Any]:
    """Take back ``amount`` (None: all that is left) of the payment recorded with
    ``payment_reference``, as the reversal ``reference``. The same reversal again returns
    the first (``duplicate`` in the result); another one with its reference, more than
    is left, or an unknown payment is refused (``Refused``, ``NotFound``)."""
    staged = rules.stage_rows(
        executor,
        rules.copy_data(
            [(0, 1, reference, amount, None, None, None, "reversal", payment_reference, reason)]
        ),
    )
    if staged.deferred:
        raise NotFound(f"no payment with reference {payment_reference}")
    locks.for_user_writes(executor, rules.staged_payers(executor))
    locks.for_reference(executor, f"reversal:{reference}")
    applied = rules.apply_chunk(
        executor,
        staged=staged,
        source=COMMAND_SOURCE,
        now=now,
        actor=actor,
        grace_days=grace_days,
    )
    if applied.not_applied:
        return _answer_not_applied(executor, applied.not_applied[0], payment_reference, amount)
    return {"reversal": rules.reversal_by_id(executor, applied.reversal_ids[1]), "duplicate": False}


def _answer_not_applied(
    executor: Executor,
    row: rules.NotApplied,
    payment_reference: str,
    amount: Decimal | None,
) -> dict[str, Any]:
    if row.outcome == "duplicate":
        assert row.earlier is not None  # noqa: S101 - _RECORDED names it
        return {"reversal": rules.reversal_by_id(executor, row.earlier), "duplicate": True}
    if row.outcome == "conflict":
        raise Refused(
            f"reversal reference {row.reference} was already used for another reversal"
            f" (reversal {row.earlier}); nothing was reversed"
        )
    if row.outcome == "unknown_payment":
        raise NotFound(f"no payment with reference {payment_reference}")
    left = row.due if row.due is not None else Decimal(0)
    if not left:
        raise Refused(
            f"over_reversal: nothing is left of payment {payment_reference} to reverse;"
            " nothing was reversed"
        )
    raise Refused(
        f"over_reversal: {format_amount(amount or left)} is more than the"
        f" {format_amount(left)} left of payment {payment_reference}; nothing was reversed"
    )
