"""``bnplctl demo``: the tour on the embedded database, safe to run again."""

from datetime import date
from typing import Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import OutputFormat
from bnplctl.context import Context


def demo(
    allow_external: Annotated[
        bool,
        typer.Option(
            "--allow-external",
            help="Run even though BNPL_DATABASE_URL is set (writes demo data there).",
        ),
    ] = False,
) -> None:
    """The tour: users, plans, the overdue sweep, refunds, a webhook file, debt, dashboard.

    Runs on the embedded database (BNPL_DATABASE_URL unset); the first run
    initialises it. Loads the sample users, creates demo plans (one started four
    months ago), runs the sweep, creates refunds and ingests the sample webhook
    file, records a partial payment of the late payer's and a sample payments file,
    then shows the masked users,
    why that user is in debt (debt explain) and the status dashboard, and writes the
    portfolio report (HTML) into the data directory.
    Running it again changes nothing.

    Example: bnplctl demo
    """
    from bnplctl.cli.output import message
    from bnplctl.errors import ConfigError

    context = app_context()
    settings = context.settings
    if not settings.embedded and not allow_external:
        raise ConfigError(
            "demo writes sample data: unset BNPL_DATABASE_URL to use the embedded database, "
            "or pass --allow-external"
        )
    if settings.embedded:
        pgdata = settings.data_dir / "pgdata"
        message(f"embedded PostgreSQL in {pgdata} (the first start takes a moment)")
    _load_users(context)
    today = _plans_and_sweep(context)
    _refunds_and_webhooks(context)
    _partial_payment(context)
    _payments_file(context)
    _show(context, today)
    _html_report(context, today)


def _payments_file(context: Context) -> None:
    """The sample settlement file (``payments import``): two payments and an unknown user,
    recorded in the file ledger; a file recorded before is not imported again."""
    import hashlib
    from importlib.resources import files

    from bnplctl.cli.output import message, render_one
    from bnplctl.importing.batch import IngestReport
    from bnplctl.importing.payments import FILES, OUTCOMES, PAYMENT_COLUMNS, import_stream
    from bnplctl.importing.readers import HashingReader, read_rows
    from bnplctl.services.demo import already_ingested

    sample = files("bnplctl.data").joinpath("payments.csv")
    checksum = hashlib.sha256(sample.read_bytes()).hexdigest()
    with context.db.unit() as work:
        done = already_ingested(work.session, FILES.kind.value, checksum)
    if done:
        message("the sample payments file was imported before")
        return
    report = IngestReport(OUTCOMES)
    with sample.open("rb") as raw:
        reader = HashingReader(raw)
        rows = read_rows(reader.buffered(), "csv", PAYMENT_COLUMNS)
        import_stream("demo:payments.csv", rows, reader, report, context=context, dry_run=False)
    summary = report.summary()
    render_one({name: summary[name] for name in ("rows", *OUTCOMES)}, OutputFormat.table,
               title="Sample payments file")  # fmt: skip


def _html_report(context: Context, today: date) -> None:
    """The portfolio report, written into the data directory (``debt report --html``)."""
    from bnplctl.cli.debt import portfolio_of, write_report
    from bnplctl.cli.output import message

    path = context.settings.data_dir / "portfolio-report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    with context.db.unit(readonly=True) as work:
        connection = work.dbapi
        report = portfolio_of(connection, today)
    write_report(path, report)
    message(f"portfolio report: {path}")


DEMO_PAYMENT = "DEMO-PART-1"


def _partial_payment(context: Context) -> None:
    """A bank transfer pays part of the late payer's oldest overdue installment (rule 10):
    it stays OVERDUE with less due. By reference, so a second demo writes nothing."""
    from decimal import Decimal

    from sqlalchemy import text

    from bnplctl.cli.output import message
    from bnplctl.services.installments import pay
    from bnplctl.services.payments import payment_with_reference

    with context.db.unit() as work:
        session = work.session
        if payment_with_reference(session, DEMO_PAYMENT) is not None:
            message(f"the demo's partial payment {DEMO_PAYMENT} was recorded before")
            return
        oldest = session.execute(
            text(
                "SELECT id FROM installments WHERE user_id = 'usr-001' AND status = 'OVERDUE'"
                " ORDER BY due_date, id LIMIT 1"
            )
        ).scalar()
        if oldest is None:
            message("usr-001 has no overdue installment: no partial payment to show")
            return
        paid = pay(session, [int(oldest)], actor=context.acting, amount=Decimal("50.00"),
                   reference=DEMO_PAYMENT)  # fmt: skip
    shown = paid["installments"][0]
    message(
        f"partial payment {DEMO_PAYMENT}: 50.00 of installment {shown['id']},"
        f" {shown['amount_due']} still due, still {shown['status']}"
    )


def _load_users(context: Context) -> None:
    from importlib.resources import as_file, files

    from bnplctl.cli.batch import finish_batch
    from bnplctl.cli.output import message, warning
    from bnplctl.importing.users import import_users

    with as_file(files("bnplctl.data").joinpath("users.csv")) as path:
        report = import_users(
            [(str(path), None)],
            context=context,
            source="demo",
            warn=warning,
        )
    message("Sample users: two rows are invalid on purpose (a bad card, a minor).")
    finish_batch(
        report,
        OutputFormat.table,
        rejects=None,
        sources=["demo"],
        key_name="user_id",
        title="Demo users import",
        exit_on_rejects=False,
    )


def _plans_and_sweep(context: Context) -> date:
    from bnplctl.cli.output import message, warning
    from bnplctl.jobs import already_swept, sweep_job
    from bnplctl.services.demo import seed_plans

    today = context.clock.today()
    with context.db.unit() as work:
        session = work.session
        message(f"demo plans created: {len(seed_plans(session, today, actor=context.acting))}")
    if already_swept(context, today) == "SUCCEEDED":  # a reverted day is swept again
        message(f"already swept for {today}")
    else:
        sweep = sweep_job(context, as_of=today, dry_run=False, warn=warning)
        message(
            f"overdue sweep for {today}: {sweep.installments_marked_overdue} "
            f"installment(s) OVERDUE, {sweep.users_marked_debt} user(s) DEBT_USER"
        )
    return today


def _refunds_and_webhooks(context: Context) -> None:
    import hashlib
    from importlib.resources import files

    from bnplctl.cli.output import message, render_one
    from bnplctl.importing.batch import IngestReport
    from bnplctl.importing.readers import HashingReader, read_rows
    from bnplctl.importing.webhooks import FILES, OUTCOMES, WEBHOOK_COLUMNS, ingest_stream
    from bnplctl.services.demo import already_ingested, seed_refunds

    sample = files("bnplctl.data").joinpath("webhooks.csv")
    with context.db.unit() as work:
        session = work.session
        message(f"demo refunds created: {seed_refunds(session, actor=context.acting)}")
        done = already_ingested(
            session, FILES.kind.value, hashlib.sha256(sample.read_bytes()).hexdigest()
        )
    if done:
        message("the sample webhook file was ingested before")
        return
    with sample.open("rb") as raw:
        reader = HashingReader(raw)
        rows = read_rows(reader.buffered(), "csv", WEBHOOK_COLUMNS)
        report = IngestReport(OUTCOMES)
        ingest_stream("demo:webhooks.csv", rows, reader, report, context=context, dry_run=False)
    summary = report.summary()
    render_one({name: summary[name] for name in ("rows", *OUTCOMES)}, OutputFormat.table,
               title="Sample webhook file")  # fmt: skip


def _show(context: Context, today: date) -> None:
    from bnplctl.cli.debt import EXPLAINED_COLUMNS
    from bnplctl.cli.output import render_list, render_story
    from bnplctl.cli.refunds import REFUND_COLUMNS
    from bnplctl.cli.status import status as status_command
    from bnplctl.cli.users import USER_LIST_COLUMNS
    from bnplctl.db import dbapi_connection
    from bnplctl.services.debt import explain, narrative
    from bnplctl.services.listing import ListRequest
    from bnplctl.services.refunds import list_refunds, public_refund
    from bnplctl.services.users import list_users, public_user

    with context.db.unit() as work:
        session = work.session
        users = [public_user(user) for user in list_users(session, request=ListRequest(limit=20))]
        refunds = [public_refund(r) for r in list_refunds(session, request=ListRequest(limit=20))]
        explained = explain(dbapi_connection(session), "usr-001", today)
    render_list(users, OutputFormat.table, columns=USER_LIST_COLUMNS, title="Users (masked)")
    render_list(refunds, OutputFormat.table, columns=REFUND_COLUMNS, title="Refunds")
    render_story(
        explained,
        OutputFormat.table,
        narrative=narrative(explained),
        sections=(("Overdue installments", explained["overdue_installments"], EXPLAINED_COLUMNS),),
        parent=("user_id", "usr-001"),
    )
    status_command(OutputFormat.table)
