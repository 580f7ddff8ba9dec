"""``bnplctl installments``: list installments, record payments."""

from datetime import date
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
from bnplctl.sorting import INSTALLMENT_SORT
from bnplctl.statuses import InstallmentStatus

app = typer.Typer(
    help="Installments: list them, record payments.\n\n"
    "Example: bnplctl installments list --user usr-001 --status OVERDUE",
    rich_markup_mode=None,
)

# Every field of -o json; a narrow table drops INSTALLMENT_DROP first, in that order.
INSTALLMENT_COLUMNS = (
    "id", "plan_id", "user_id", "sequence", "amount_due", "due_date", "status", "paid_at"
)  # fmt: skip
INSTALLMENT_DROP = ("paid_at", "sequence", "user_id")


@app.command("list")
def list_(
    user: Annotated[str | None, checked_option("--user", "user", "Only this user's.")] = None,
    plan: Annotated[
        int | None, typer.Option("--plan", metavar="PLAN_ID", help="Only this plan's.")
    ] = None,
    status: Annotated[
        InstallmentStatus | None, typer.Option("--status", help="Only in this status.")
    ] = None,
    due_before: Annotated[
        date | None,
        checked_option("--due-before", "date", "Only due before DATE (YYYY-MM-DD)."),
    ] = None,
    due_after: Annotated[
        date | None,
        checked_option("--due-after", "date", "Only due after DATE (YYYY-MM-DD)."),
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(INSTALLMENT_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List installments, earliest due first.

    Example: bnplctl installments list --user usr-001 --status OVERDUE

    Example: bnplctl installments list --plan 1 -o csv
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.plans import list_installments, public_installment

    request = list_request(limit, every, sort)
    before, after = due_before, due_after
    with app_context().db.unit() as tx:
        session = tx.session
        installments = list_installments(
            session,
            user_id=user,
            plan_id=plan,
            status=status,
            due_before=before,
            due_after=after,
            request=request,
        )
        shown = (public_installment(item) for item in installments)  # as they arrive
        render_list(
            shown,
            output,
            columns=INSTALLMENT_COLUMNS,
            title="Installments",
            drop=INSTALLMENT_DROP,
        )
        report_cut(installments)


@app.command("pay")
def pay(
    installment_ids: Annotated[
        list[int], typer.Argument(metavar="INSTALLMENT_ID", help="One or more installment ids.")
    ],
    amount: Annotated[
        Decimal | None,
        checked_option(
            "--amount",
            "amount",
            "Pay this much of one installment (2 decimals); default: all that is due.",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        checked_option(
            "--reference",
            "reference",
            "The payment's reference (e.g. the bank transfer's id), one installment:"
            " the same payment again returns the first, another one with it is refused.",
        ),
    ] = None,
    idempotency_key: IdempotencyKeyOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Pay installments, in full or in part (rules 4 and 10); each payment is recorded.

    Without --amount every installment named is paid in full, all or none. With
    --amount (one installment) part of it is paid: it keeps its status until nothing
    is due. More than is due is refused (exit 3), nothing written. A plan whose
    installments are all PAID becomes COMPLETED; a DEBT_USER with no OVERDUE
    installment left becomes NORMAL, in the same transaction.

    Example: bnplctl installments pay 17 18 --idempotency-key payment-9001

    Example: bnplctl installments pay 17 --amount 50.00 --reference TRX-3301
    """
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message, render_list, render_one
    from bnplctl.errors import UsageProblem
    from bnplctl.services.idempotency import run_once
    from bnplctl.services.installments import pay as pay_installments

    wanted = sorted(set(installment_ids))
    if (amount is not None or reference is not None) and len(wanted) != 1:
        given = " and ".join(
            name for name, value in (("--amount", amount), ("--reference", reference)) if value
        )
        raise UsageProblem(f"{given} pay{'s' if ' and ' not in given else ''} one installment:"
                           " name only one")  # fmt: skip
    parsed, checked = amount, reference
    request = {
        "installment_ids": wanted,
        "amount": str(parsed) if parsed is not None else None,
        "reference": checked,
    }
    with app_context().db.unit() as tx:
        session = tx.session

        def work() -> dict[str, Any]:
            return pay_installments(
                session, wanted, actor=current_actor(), amount=parsed, reference=checked
            )

        result, replayed = run_once(
            session, key=idempotency_key, command="installments.pay", request=request, work=work
        )
    if replayed:
        message(f"idempotency key {idempotency_key}: returning the earlier payment")
    replayed = replayed or result.pop("duplicate", False)
    if replayed and checked is not None:
        message(f"payment reference {checked}: recorded before; returning it, nothing written")
    if output in (OutputFormat.json, OutputFormat.jsonl):
        render_one(result, output)
        return
    render_list(result["installments"], output, title="Installments paid")
    for payment in result["payments"]:
        done = "recorded before" if replayed else "recorded"
        message(f"payment {payment['id']}: {payment['amount']} {done}")
    for plan_id in result["plans_completed"]:
        message(f"plan {plan_id} is COMPLETED")
    for user_id in result["users_restored"]:
        message(f"user {user_id} is back to NORMAL")
