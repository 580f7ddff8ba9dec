"""``bnplctl installments``: record payments."""

from typing import Annotated, Any

import typer

from bnplctl.cli.options import IdempotencyKeyOption, OutputFormat, OutputOption

app = typer.Typer(
    help="Installments: record payments.\n\nExample: bnplctl installments pay 17 18",
    rich_markup_mode=None,
)


@app.command("pay")
def pay(
    installment_ids: Annotated[
        list[int], typer.Argument(metavar="INSTALLMENT_ID", help="One or more installment ids.")
    ],
    idempotency_key: IdempotencyKeyOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Mark installments PAID, all or none (rule 4).

    A plan whose installments are all PAID becomes COMPLETED; a DEBT_USER with no
    OVERDUE installment left becomes NORMAL, in the same transaction. Paying an
    installment that is already PAID is refused (exit 3) unless it repeats an
    earlier request with the same --idempotency-key.

    Example: bnplctl installments pay 17 18 --idempotency-key payment-9001
    """
    from bnplctl.cli.app import current_actor
    from bnplctl.cli.output import message, render_list, render_one
    from bnplctl.db import session_scope
    from bnplctl.services.idempotency import run_once
    from bnplctl.services.installments import pay as pay_installments

    request = {"installment_ids": sorted(set(installment_ids))}
    with session_scope() as session:

        def work() -> dict[str, Any]:
            return pay_installments(session, installment_ids, actor=current_actor())

        result, replayed = run_once(
            session, key=idempotency_key, command="installments.pay", request=request, work=work
        )
    if replayed:
        message(f"idempotency key {idempotency_key}: returning the earlier payment")
    if output in (OutputFormat.json, OutputFormat.jsonl):
        render_one(result, output)
        return
    render_list(result["installments"], output, title="Paid installments")
    for plan_id in result["plans_completed"]:
        message(f"plan {plan_id} is COMPLETED")
    for user_id in result["users_restored"]:
        message(f"user {user_id} is back to NORMAL")
