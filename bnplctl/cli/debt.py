"""``bnplctl debt``: the debt view of a user."""

from __future__ import annotations

from typing import Annotated

import typer

from bnplctl.cli.options import OutputFormat, OutputOption

app = typer.Typer(
    help="Debt: what a user owes.\n\nExample: bnplctl debt show usr-001",
    rich_markup_mode=None,
)

OVERDUE_COLUMNS = ("id", "plan_id", "amount_due", "due_date", "days_overdue")


@app.command("show")
def show(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="The user's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """A user's overdue installments, their total and the user's status.

    days_overdue counts from the due date to today in BNPL_TIMEZONE.

    Example: bnplctl debt show usr-001 -o json
    """
    from bnplctl.cli.output import render_nested
    from bnplctl.clock import business_today
    from bnplctl.db import session_scope
    from bnplctl.services.debt import debt_of

    with session_scope() as session:
        shown = debt_of(session, user_id, business_today())
    render_nested(
        shown,
        output,
        child_key="overdue_installments",
        child_columns=OVERDUE_COLUMNS,
        title=f"Debt of {user_id}",
        child_title="Overdue installments",
        parent=("user_id", user_id),
    )
