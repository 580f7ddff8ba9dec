"""``bnplctl payments``: the payments received (rule 10)."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import (
    AllOption,
    DryRunOption,
    FilesArgument,
    FormatOption,
    InputFormat,
    LimitOption,
    OutputFormat,
    OutputOption,
    checked_argument,
    checked_option,
    rejects_option,
    sort_option,
)
from bnplctl.sorting import PAYMENT_SORT

app = typer.Typer(
    help="Payments received: import the processor's files, list them, reverse them.\n\n"
    "Example: bnplctl payments import settlement.csv --rejects rejects.csv",
    rich_markup_mode=None,
)

# Every field of -o json but the allocations (a nested list: JSON only); a narrow table
# drops PAYMENT_DROP first, in that order.
PAYMENT_COLUMNS = ("id", "reference", "user_id", "amount", "reversed", "paid_at", "source")
PAYMENT_DROP = ("source", "id", "reversed")
# What a reversal undid of each installment, and where the installment stands now.
UNDONE_COLUMNS = ("reference", "payment_id", "installment_id", "amount", "status", "amount_due")


class Preset(StrEnum):
    """The processors' reports ``payments import`` reads (``importing.presets.PRESETS``)."""

    adyen = "adyen-settlement"
    stripe = "stripe-payouts"
    paypal = "paypal-settlement"


class Target(StrEnum):
    user = "user"
    installment = "installment"


@app.command("list")
def list_(
    user: Annotated[str | None, checked_option("--user", "user", "Only this user's.")] = None,
    since: Annotated[
        datetime | None,
        checked_option("--since", "since", "Paid at or after: ISO date or timestamp."),
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(PAYMENT_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List payments, newest first, with what reversals took back of each; -o json adds
    what each paid of which installment and its reversals.

    Example: bnplctl payments list --user usr-001 --since 2026-11-01

    Example: bnplctl payments list -o json
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.payments import iter_public_payments, list_payments

    request = list_request(limit, every, sort)
    since_at = since
    with app_context().db.unit() as work:
        session = work.session
        payments = list_payments(session, user_id=user, since=since_at, request=request)
        shown = iter_public_payments(session, payments)
        if output in (OutputFormat.json, OutputFormat.jsonl):
            render_list(shown, output)
        else:
            render_list(shown, output, columns=PAYMENT_COLUMNS, title="Payments", drop=PAYMENT_DROP)
        report_cut(payments)


@app.command("import")
def import_(
    sources: FilesArgument,
    input_format: FormatOption = InputFormat.auto,
    rejects: Annotated[str | None, rejects_option("reference")] = None,
    dry_run: DryRunOption = False,
    preset: Annotated[
        Preset | None,
        typer.Option(
            "--preset",
            help="Read the processor's own settlement report (CSV).",
            case_sensitive=False,
        ),
    ] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FIELD=COLUMN",
            help="Read FIELD from COLUMN; repeatable (with --preset: the target only).",
        ),
    ] = None,
    target: Annotated[
        Target | None,
        typer.Option(
            "--target",
            help="What a report's target column names (default user).",
            case_sensitive=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Record the payments of files (rule 10): reference, amount, user_id or
    installment_id, optional paid_at; or a processor's report (--preset, --map).

    A payment to a user pays their unpaid installments oldest due first; more than
    is due where it goes is refused whole (overpayment). Each row gets one outcome:
    applied, duplicate, conflict, unknown_user, unknown_installment, overpayment or
    invalid. A processor's report adds reversed (rule 12), unknown_payment,
    over_reversal, currency (not BNPL_CURRENCY's, or not the file's first) and skipped
    (fees, payouts: counted, never rejected). Valid rows are applied even when others
    are not; exit 0 when every row was applied, reversed or skipped, 5 otherwise.
    Chunks of 5,000 rows, one transaction each: after a crash, run the same file again.

    Example: bnplctl payments import settlement-2026-12-01.csv --rejects rejects.csv

    Example: bnplctl payments import adyen_batch_118.csv --preset adyen-settlement

    Example: bnplctl payments import bank.csv --map reference=Ref --map amount=Betrag
    """  # fmt: skip
    from bnplctl.cli.batch import run_files_command
    from bnplctl.cli.output import byte_progress
    from bnplctl.importing.payments import OUTCOMES, import_files, settlement_layout

    layout = settlement_layout(
        preset.value if preset else None,
        maps or [],
        target.value if target else None,
        input_format.value,
    )

    def run(report: Any, sized: list[tuple[str, int | None]]) -> dict[str, Any]:
        files = import_files(
            sized,
            input_format.value,
            report,
            context=app_context(),
            dry_run=dry_run,
            progress=byte_progress,
            layout=layout,
        )
        return {"files": files}

    run_files_command(
        sources,
        rejects,
        output,
        key_name="reference",
        outcomes=OUTCOMES,
        title="Payments import",
        dry_run=dry_run,
        run=run,
    )


@app.command("reverse")
def reverse(
    payment_reference: Annotated[
        str, checked_argument("reference", "PAYMENT_REFERENCE", "The payment's reference.")
    ],
    reference: Annotated[
        str,
        checked_option(
            "--reference",
            "reference",
            "The reversal's own reference (the processor's refund or chargeback id):"
            " the same reversal again returns the first.",
        ),
    ],
    amount: Annotated[
        Decimal | None,
        checked_option(
            "--amount", "amount", "Take back this much (2 decimals); default: all that is left."
        ),
    ] = None,
    reason: Annotated[
        str | None, checked_option("--reason", "free_text", "Why (kept with the reversal).")
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Take back all or part of a recorded payment (rule 12): a refund by the processor,
    a chargeback, a returned debit.

    What the payment paid is undone newest first: each installment owes that much
    again; a PAID one is UPCOMING again, or OVERDUE when its due date is before the
    latest sweep's cutoff (its owner then becomes DEBT_USER); a COMPLETED plan is
    ACTIVE again. What refunds cut stays cut. More than is left of the payment is
    refused (exit 3); an unknown payment is exit 4; the same reversal again returns
    the first, another one with its reference is refused (exit 3).

    Example: bnplctl payments reverse PSP-88 --reference CB-12 --reason chargeback

    Example: bnplctl payments reverse PSP-8812 --reference RF-77 --amount 25.00
    """
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message, render_list, render_one
    from bnplctl.services.reversals import reverse as reverse_payment

    context = app_context()
    with context.db.unit() as work:
        result = reverse_payment(
            work.connection,
            payment_reference,
            reference=reference,
            amount=amount,
            reason=reason,
            now=context.clock.now(),
            actor=current_actor(),
            grace_days=context.settings.grace_days,
        )
    reversal = result["reversal"]
    if result["duplicate"]:
        message(f"reversal reference {reference}: recorded before; returning it, nothing written")
    if output in (OutputFormat.json, OutputFormat.jsonl):
        render_one(reversal, output)
        return
    done = "recorded before" if result["duplicate"] else "recorded"
    render_list(
        [{"reference": reversal["reference"]} | undone for undone in reversal["undone"]],
        output,
        columns=UNDONE_COLUMNS,
        title=f"Reversal {reversal['id']} of payment {reversal['payment_reference']}",
    )
    message(
        f"reversal {reversal['id']}: {reversal['amount']} of payment"
        f" {reversal['payment_reference']} {done}"
    )
