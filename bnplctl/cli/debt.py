"""``bnplctl debt``: the debt view of a user."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import AsOfOption, LogFileOption, OutputFormat, OutputOption, for_people

if TYPE_CHECKING:
    from bnplctl.db import DbapiConnection

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
    from bnplctl.services.debt import debt_of

    with app_context().db.unit(readonly=True) as work:
        connection = work.dbapi
        shown = debt_of(connection, user_id, app_context().clock.today())
    render_nested(
        shown,
        output,
        child_key="overdue_installments",
        child_columns=OVERDUE_COLUMNS,
        title=f"Debt of {user_id}",
        child_title="Overdue installments",
        parent=("user_id", user_id),
    )


EXPLAINED_COLUMNS = ("id", "plan_id", "amount_due", "due_date", "overdue_since", "days_overdue")
HISTORY_COLUMNS = ("occurred_at", "action", "details", "about")  # "about" goes first


@app.command("explain")
def explain(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="The user's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Why a user has their status: since when, what clears it, what is due next.

    Also the user's latest audit events. days_overdue counts from the due date to
    today in BNPL_TIMEZONE; -o csv gives the overdue installments.

    Example: bnplctl debt explain usr-001
    """
    from bnplctl.cli.output import render_story
    from bnplctl.services.debt import explain as explain_debt
    from bnplctl.services.debt import narrative

    with app_context().db.unit(readonly=True) as work:
        connection = work.dbapi
        explained = explain_debt(connection, user_id, app_context().clock.today())
    history = [
        {**event, "about": f"{event['entity']} {event['entity_id']}"}
        for event in explained["history"]
    ]
    render_story(
        explained,
        output,
        narrative=narrative(explained),
        sections=(
            ("Overdue installments", explained["overdue_installments"], EXPLAINED_COLUMNS),
            ("Latest events", history, HISTORY_COLUMNS),
        ),
        parent=("user_id", user_id),
    )


@app.command("sweep")
def sweep(
    as_of: AsOfOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; write nothing.")
    ] = False,
    allow_future: Annotated[
        bool,
        typer.Option("--allow-future", help="Accept an --as-of after today (staging, tests)."),
    ] = False,
    revert: Annotated[
        int | None,
        typer.Option(
            "--revert",
            metavar="RUN_ID",
            help="Undo this run (the latest one that marked something) instead of sweeping.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    log_file: LogFileOption = None,
) -> None:
    """The overdue sweep (rule 3): late installments become OVERDUE, their owners DEBT_USER.

    Installments due before the business date minus BNPL_GRACE_DAYS are late. An
    --as-of after today in BNPL_TIMEZONE is refused (exit 2) unless --allow-future:
    a typo must not put customers into debt. A --dry-run writes nothing, so it may
    look ahead without it (a forecast). Each user marked gets a user.status_changed
    audit event with the run id and the business date.
    Only one sweep runs at a time: a second one exits 75 at once. Running it again
    for the same date changes nothing. This is the cron job.

    --revert RUN_ID undoes the latest successful run that marked something (rule 11;
    later runs that marked nothing do not count; any other run: exit 3): its
    installments still OVERDUE become UPCOMING, users with no OVERDUE installment left
    become NORMAL (audited), the run is REVERTED, and so are the later runs that marked
    nothing (their dates stood on it). With --dry-run it only counts.

    Example: bnplctl debt sweep --as-of 2026-11-27 --dry-run

    Example: bnplctl debt sweep --revert 41 --dry-run
    """
    from bnplctl.cli.context import log_to
    from bnplctl.cli.output import message, render_one, warning
    from bnplctl.errors import UsageProblem
    from bnplctl.jobs import revert_job, sweep_job

    context = app_context()
    log_to(log_file, "debt sweep")
    if revert is not None:
        if as_of is not None or allow_future:
            raise UsageProblem("--revert undoes a run: --as-of and --allow-future do not apply")
        undone = revert_job(context, run_id=revert, dry_run=dry_run)
        title = f"Sweep run {revert} reverted" + (" (dry run)" if dry_run else "")
        render_one(undone.public(), output, title=title)
        return

    business_date = as_of
    today = context.clock.today()
    future = business_date is not None and business_date > today
    if future and not (allow_future or dry_run):  # a dry run writes nothing: a forecast
        raise UsageProblem(
            f"--as-of {business_date} is after today ({today} in BNPL_TIMEZONE);"
            " add --allow-future if that is meant"
        )
    result = sweep_job(context, as_of=business_date, dry_run=dry_run, warn=warning)
    shown = result.public()
    render_one(shown, output, title="Overdue sweep" + (" (dry run)" if dry_run else ""))
    nothing = not (result.installments_marked_overdue or result.users_marked_debt)
    if nothing and result.already_swept:
        message(f"already swept for {shown['business_date']}: nothing changed")
    elif nothing:
        message("nothing to change")


@app.command("report")
def report(
    as_of: AsOfOption = None,
    html: Annotated[
        str | None,  # as typed: a Path would turn "" into "." and drop a trailing "/"
        typer.Option(
            "--html",
            metavar="PATH",
            help="Also write the portfolio report (charts, largest debtors) to PATH as one"
            " self-contained HTML file.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Aging of overdue installments: users, installments and amount per bucket of days.

    Buckets: 1-30, 31-60, 61-90, 90+ days overdue at the business date. --html PATH
    also writes the portfolio report: aging, overdue amount and users in debt over the
    last sweeps, payments and refunds per day, the largest debtors (masked).

    Example: bnplctl debt report -o json

    Example: bnplctl debt report --html portfolio.html
    """
    if html is not None and html in ("", "-"):
        from bnplctl.errors import UsageProblem

        raise UsageProblem("--html needs a file name (/dev/stdout writes to standard output)")
    report_file = None
    if html is not None:  # an unwritable place fails before anything is printed
        from bnplctl.report_html import open_target

        report_file = open_target(html)
    try:
        _report(as_of, html, output, report_file)
    except BaseException:
        if report_file is not None:
            report_file.abandon()
        raise


def _report(as_of: Any, html: str | None, output: OutputFormat, report_file: Any) -> None:
    """The aging report on stdout, then the HTML report into ``report_file``."""
    from bnplctl.cli.output import message, render_nested
    from bnplctl.services.debt import aging_report

    business_date = as_of if as_of is not None else app_context().clock.today()
    with app_context().db.unit(readonly=True) as work:
        connection = work.dbapi
        shown = aging_report(connection, business_date)
        report_data = portfolio_of(connection, business_date) if html is not None else None
    people = for_people(output)
    render_nested(
        _with_bars(shown) if people else shown,
        output,
        child_key="buckets",
        child_columns=(
            "bucket",
            "users",
            "installments",
            "amount",
            *(("share",) if people else ()),
        ),
        title="Debt aging",
        child_title=f"Overdue at {shown['business_date']}",
        parent=("business_date", shown["business_date"]),
    )
    if html is not None and report_data is not None:
        write_report(html, report_data, report_file)
        message(f"portfolio report written to {html}")


BAR_WIDTH = 20


def _with_bars(shown: dict[str, Any]) -> dict[str, Any]:
    """The buckets with a bar of their share of the overdue amount, for a person."""
    from decimal import Decimal

    amounts = [Decimal(bucket["amount"]) for bucket in shown["buckets"]]
    largest = max(amounts, default=Decimal(0))
    return shown | {
        "buckets": [
            bucket | {"share": "█" * int(BAR_WIDTH * amount / largest) if largest else ""}
            for bucket, amount in zip(shown["buckets"], amounts, strict=True)
        ]
    }


def portfolio_of(connection: "DbapiConnection", business_date: Any) -> dict[str, Any]:
    from bnplctl.services.portfolio import portfolio

    return portfolio(connection, business_date, app_context().settings.timezone)


def write_report(path: str | Path, report_data: dict[str, Any], target: Any = None) -> None:
    """Render the portfolio report (``report_html``, which loads matplotlib) to ``path``."""
    from bnplctl import clock, report_html

    generated = clock.now().isoformat(timespec="minutes")
    document = report_html.render(
        report_data, currency=app_context().settings.currency, generated_at=generated
    )
    report_html.write(path, document, target)
