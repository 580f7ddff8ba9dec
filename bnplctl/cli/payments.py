"""``bnplctl payments``: the payments received (rule 10)."""

from typing import Annotated

import typer

from bnplctl.cli.options import AllOption, LimitOption, OutputFormat, OutputOption, sort_option
from bnplctl.sorting import PAYMENT_SORT

app = typer.Typer(
    help="Payments received: list them.\n\nExample: bnplctl payments list --user usr-001",
    rich_markup_mode=None,
)

# Every field of -o json but the allocations (a nested list: JSON only); a narrow table
# drops PAYMENT_DROP first, in that order.
PAYMENT_COLUMNS = ("id", "reference", "user_id", "amount", "paid_at", "source")
PAYMENT_DROP = ("source", "id")


@app.command("list")
def list_(
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER_ID", help="Only this user's.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="WHEN", help="Paid at or after: ISO date or timestamp."),
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(PAYMENT_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List payments, newest first; -o json adds what each paid of which installment.

    Example: bnplctl payments list --user usr-001 --since 2026-11-01

    Example: bnplctl payments list -o json
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.db import session_scope
    from bnplctl.services.audit import parse_since
    from bnplctl.services.payments import iter_public_payments, list_payments

    request = list_request(limit, every, sort)
    since_at = parse_since(since) if since else None
    with session_scope() as session:
        payments = list_payments(session, user_id=user, since=since_at, request=request)
        shown = iter_public_payments(session, payments)
        if output in (OutputFormat.json, OutputFormat.jsonl):
            render_list(shown, output)
        else:
            render_list(shown, output, columns=PAYMENT_COLUMNS, title="Payments", drop=PAYMENT_DROP)
        report_cut(payments)
