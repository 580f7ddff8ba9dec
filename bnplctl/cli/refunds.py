"""``bnplctl refunds``: create refunds and move them through their states."""

from decimal import Decimal
from typing import Annotated, Any

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import (
    AllOption,
    IdempotencyKeyOption,
    LimitOption,
    OutputFormat,
    OutputOption,
    checked_option,
    sort_option,
)
from bnplctl.sorting import REFUND_SORT
from bnplctl.statuses import RefundStatus

app = typer.Typer(
    help="Refunds: create, approve, reject, cancel, list, show.\n\n"
    "Example: bnplctl refunds create --user usr-001 --transaction-id REF-001 --amount 75.50",
    rich_markup_mode=None,
)

# Every field of -o json, so that CSV carries what JSON does; a narrow table drops the
# columns of REFUND_DROP first, in that order.
REFUND_COLUMNS = (
    "id",
    "transaction_id",
    "user_id",
    "plan_id",
    "amount",
    "status",
    "applied_amount",
    "payout_amount",
    "processed_at",
    "reason",
    "decision_reason",
    "merchant_reference",
    "created_at",
)
REFUND_DROP = (
    "merchant_reference",
    "created_at",
    "reason",
    "decision_reason",
    "payout_amount",
    "applied_amount",
    "processed_at",
    "plan_id",
    "user_id",
)


RefOption = Annotated[
    str, typer.Argument(metavar="REF", help="The refund's transaction_id or its numeric id.")
]
ReasonOption = Annotated[
    str | None, checked_option("--reason", "free_text", "Why (kept on the refund).")
]
DecisionReasonOption = Annotated[
    str | None,
    checked_option(
        "--reason",
        "free_text",
        "Why this decision (kept as decision_reason, beside the reason given at creation).",
    ),
]


@app.command("create")
def create(
    user: Annotated[str, checked_option("--user", "user", "The user's id.")],
    transaction_id: Annotated[
        str,
        checked_option(
            "--transaction-id", "transaction_id", "The merchant's refund reference (unique)."
        ),
    ],
    amount: Annotated[Decimal, checked_option("--amount", "amount", "Amount, e.g. 75.50.")],
    plan: Annotated[
        int | None,
        typer.Option("--plan", metavar="PLAN_ID", help="The user's plan the refund reduces."),
    ] = None,
    reason: ReasonOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a PENDING refund. The same transaction_id with the same user, amount and
    plan returns the existing refund (exit 0); with anything different, exit 3.

    Example: bnplctl refunds create --user usr-001 --transaction-id REF-001 --amount 75.50 --plan 1
    """
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message, render_one
    from bnplctl.services.idempotency import run_once
    from bnplctl.services.refunds import create_refund, public_refund

    total, reference = amount, transaction_id
    request = {"user": user, "transaction_id": reference, "amount": str(total), "plan": plan}
    existed = False
    with app_context().db.unit() as tx:
        session = tx.session

        def work() -> dict[str, Any]:
            nonlocal existed
            refund, existed = create_refund(
                session,
                user_id=user,
                transaction_id=reference,
                amount=total,
                plan_id=plan,
                reason=reason,
                actor=current_actor(),
            )
            return public_refund(refund)

        shown, replayed = run_once(
            session, key=idempotency_key, command="refunds.create", request=request, work=work
        )
    if replayed:
        message(f"idempotency key {idempotency_key}: returning the refund created earlier")
    elif existed:
        message(f"refund {reference} already existed: returning it unchanged")
    render_one(shown, output, title=f"Refund {shown['transaction_id']}")


def _move(ref: str, command: str, reason: str | None, output: OutputFormat) -> None:
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import render_one
    from bnplctl.services.refunds import public_refund, transition

    with app_context().db.unit() as tx:
        session = tx.session
        refund = transition(session, ref, command, reason=reason, actor=current_actor())
        shown = public_refund(refund)
    render_one(shown, output, title=f"Refund {shown['transaction_id']}")


@app.command("approve")
def approve(
    ref: RefOption, reason: DecisionReasonOption = None, output: OutputOption = OutputFormat.table
) -> None:
    """Approve a PENDING refund. Linked to a plan, it is applied at once (rule 7): the
    unpaid installments are reduced from the last one backwards, the excess is the
    payout, and the refund is COMPLETED.

    Example: bnplctl refunds approve REF-001
    """
    _move(ref, "approve", reason, output)


@app.command("reject")
def reject(
    ref: RefOption, reason: DecisionReasonOption = None, output: OutputOption = OutputFormat.table
) -> None:
    """Reject a PENDING refund (final).

    Example: bnplctl refunds reject REF-001 --reason "goods not returned"
    """
    _move(ref, "reject", reason, output)


@app.command("cancel")
def cancel(
    ref: RefOption, reason: DecisionReasonOption = None, output: OutputOption = OutputFormat.table
) -> None:
    """Cancel a PENDING refund (final).

    Example: bnplctl refunds cancel 7 --reason "customer withdrew the request"
    """
    _move(ref, "cancel", reason, output)


@app.command("list")
def list_(
    user: Annotated[
        str | None, checked_option("--user", "user", "Only this user's refunds.")
    ] = None,
    status: Annotated[
        RefundStatus | None, typer.Option("--status", help="Only refunds in this status.")
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(REFUND_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List refunds, oldest first.

    Example: bnplctl refunds list --status PENDING -o csv

    Example: bnplctl refunds list --sort -amount --limit 10
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.refunds import list_refunds, public_refund

    request = list_request(limit, every, sort)
    with app_context().db.unit() as tx:
        session = tx.session
        chosen = status
        refunds = list_refunds(session, user_id=user, status=chosen, request=request)
        shown = (public_refund(refund) for refund in refunds)  # rendered as they arrive
        render_list(shown, output, columns=REFUND_COLUMNS, title="Refunds", drop=REFUND_DROP)
        report_cut(refunds)


@app.command("show")
def show(ref: RefOption, output: OutputOption = OutputFormat.table) -> None:
    """One refund, by transaction_id or id.

    Example: bnplctl refunds show REF-001 -o json
    """
    from bnplctl.cli.output import render_one
    from bnplctl.services.refunds import find_refund, public_refund

    with app_context().db.unit() as tx:
        session = tx.session
        shown = public_refund(find_refund(session, ref))
    render_one(shown, output, title=f"Refund {shown['transaction_id']}")
