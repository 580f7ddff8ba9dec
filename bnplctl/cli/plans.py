"""``bnplctl plans``: preview, create, list and show installment plans."""

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
from bnplctl.sorting import PLAN_SORT
from bnplctl.statuses import PlanStatus

app = typer.Typer(
    help="Installment plans: preview the schedule, create, list, show.\n\n"
    "Example: bnplctl plans create --user usr-001 --amount 500.00 --installments 3",
    rich_markup_mode=None,
)

INSTALLMENT_COLUMNS = ("id", "sequence", "amount_due", "due_date", "status", "paid_at")
PLAN_LIST_COLUMNS = (
    "id",
    "user_id",
    "total_amount",
    "status",
    "installments",
    "paid",
    "next_due_date",
    "merchant_reference",
    "start_date",
    "created_at",
)
PLAN_DROP = ("created_at", "start_date", "merchant_reference", "paid", "installments", "user_id")


AmountOption = Annotated[
    Decimal, checked_option("--amount", "amount", "Total, e.g. 500.00 (2 decimals).")
]
InstallmentsOption = Annotated[
    int, checked_option("--installments", "installments", "Number of monthly installments, 1-24.")
]
StartOption = Annotated[
    date | None,
    checked_option("--start", "date", "Start date YYYY-MM-DD (default: today in BNPL_TIMEZONE)."),
]


def render_plan(plan: dict[str, Any], output: OutputFormat) -> None:
    from bnplctl.cli.output import render_nested

    render_nested(
        plan,
        output,
        child_key="installments",
        child_columns=INSTALLMENT_COLUMNS,
        title=f"Plan {plan['id']}",
        child_title="Installments",
        parent=("plan_id", plan["id"]),
    )


def _request(amount: Decimal, installments: int, start: date | None, reference: str | None) -> Any:
    """The options (each checked as it was parsed); the start defaults to today."""
    from bnplctl.validators import PlanTerms

    return PlanTerms(amount, installments, start or app_context().clock.today(), reference)


@app.command("preview")
def preview(
    amount: AmountOption,
    installments: InstallmentsOption = 3,
    start: StartOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Print the schedule of a plan without writing anything.

    Example: bnplctl plans preview --amount 500.00 --installments 3 --start 2026-01-31
    """
    from bnplctl.cli.output import message, render_nested
    from bnplctl.services.installment_schedule import public_schedule, schedule

    request = _request(amount, installments, start, None)
    total, start_date = request.amount, request.start
    shown = public_schedule(total, start_date, schedule(total, installments, start_date))
    message("preview only: nothing was written")
    render_nested(
        shown,
        output,
        child_key="installments",
        child_columns=("sequence", "amount_due", "due_date"),
        title="Plan preview",
        child_title="Installments",
    )


@app.command("create")
def create(
    user: Annotated[str, checked_option("--user", "user", "The user's id.")],
    amount: AmountOption,
    installments: InstallmentsOption = 3,
    start: StartOption = None,
    merchant_reference: Annotated[
        str | None,
        checked_option(
            "--merchant-reference", "merchant_reference", "The merchant's order reference."
        ),
    ] = None,
    idempotency_key: IdempotencyKeyOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a plan and its installments in one transaction; prints the plan.

    A DEBT_USER is refused (exit 3). Repeating a request with the same
    --idempotency-key returns the first plan and writes nothing.

    Example: bnplctl plans create --user usr-001 --amount 500.00 --idempotency-key order-42
    """
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message
    from bnplctl.services.idempotency import run_once
    from bnplctl.services.plans import create_plan, public_plans

    parsed = _request(amount, installments, start, merchant_reference)
    total, start_date, reference = parsed.amount, parsed.start, parsed.merchant_reference
    request = {
        "user": user,
        "amount": str(total),
        "installments": installments,
        "start": start,
        "merchant_reference": reference,
    }

    with app_context().db.unit() as tx:
        session = tx.session

        def work() -> dict[str, Any]:
            plan = create_plan(
                session,
                user_id=user,
                total=total,
                count=installments,
                start=start_date,
                merchant_reference=reference,
                actor=current_actor(),
            )
            return public_plans(session, [plan])[0]

        shown, replayed = run_once(
            session, key=idempotency_key, command="plans.create", request=request, work=work
        )
    if replayed:
        message(f"idempotency key {idempotency_key}: returning the plan created earlier")
    render_plan(shown, output)


@app.command("list")
def list_(
    user: Annotated[str | None, checked_option("--user", "user", "Only this user's plans.")] = None,
    status: Annotated[
        PlanStatus | None, typer.Option("--status", help="Only plans in this status.")
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(PLAN_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List plans, oldest first (json/jsonl include the installments; for them in CSV,
    see `bnplctl installments list`).

    Example: bnplctl plans list --user usr-001 --status ACTIVE

    Example: bnplctl plans list --sort -total_amount --limit 10 -o csv
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.plans import iter_public_plans, list_plans

    request = list_request(limit, every, sort)
    with app_context().db.unit() as tx:  # rendered as the plans arrive
        session = tx.session
        chosen = status
        plans = list_plans(session, user_id=user, status=chosen, request=request)
        shown = iter_public_plans(session, plans)
        if output in (OutputFormat.json, OutputFormat.jsonl):
            render_list(shown, output)
        else:
            rows = (_plan_row(plan) for plan in shown)
            render_list(rows, output, columns=PLAN_LIST_COLUMNS, title="Plans", drop=PLAN_DROP)
        report_cut(plans)


def _plan_row(plan: dict[str, Any]) -> dict[str, Any]:
    installments = plan["installments"]
    unpaid = [i["due_date"] for i in installments if i["status"] != "PAID"]
    return {
        "id": plan["id"],
        "user_id": plan["user"]["user_id"],
        "total_amount": plan["total_amount"],
        "status": plan["status"],
        "installments": len(installments),
        "paid": sum(1 for i in installments if i["status"] == "PAID"),
        "next_due_date": min(unpaid) if unpaid else None,
        "merchant_reference": plan["merchant_reference"],
        "start_date": plan["start_date"],
        "created_at": plan["created_at"],
    }


@app.command("show")
def show(
    plan_id: Annotated[int, typer.Argument(metavar="PLAN_ID", help="The plan's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """One plan with its (masked) user and its installments.

    Example: bnplctl plans show 42 -o json
    """
    from bnplctl.services.plans import get_plan, public_plans

    with app_context().db.unit() as tx:
        session = tx.session
        shown = public_plans(session, [get_plan(session, plan_id)])[0]
    render_plan(shown, output)
