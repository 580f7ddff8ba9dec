"""``bnplctl demo``: the tour on the embedded database, safe to run again."""

from __future__ import annotations

from typing import Annotated

import typer

from bnplctl.cli.options import OutputFormat


def demo(
    allow_external: Annotated[
        bool,
        typer.Option(
            "--allow-external",
            help="Run even though BNPL_DATABASE_URL is set (writes demo data there).",
        ),
    ] = False,
) -> None:
    """The tour: users, plans, the overdue sweep, the debt of a late payer, the dashboard.

    Runs on the embedded database (BNPL_DATABASE_URL unset); the first run
    initialises it. Loads the sample users, creates demo plans (one started four
    months ago), runs the sweep, and shows the masked users, that user's debt and
    the status dashboard. Running it again changes nothing.

    Example: bnplctl demo
    """
    from importlib.resources import files

    from bnplctl.cli.app import current_actor
    from bnplctl.cli.batch import finish_batch
    from bnplctl.cli.debt import OVERDUE_COLUMNS
    from bnplctl.cli.output import message, render_list, render_nested
    from bnplctl.cli.status import status as status_command
    from bnplctl.cli.users import USER_LIST_COLUMNS
    from bnplctl.clock import business_today
    from bnplctl.config import get_settings
    from bnplctl.db import session_scope
    from bnplctl.errors import ConfigError
    from bnplctl.importing.batch import USER_COLUMNS, import_users
    from bnplctl.importing.readers import read_rows
    from bnplctl.jobs import already_swept, sweep_job
    from bnplctl.services.debt import debt_of
    from bnplctl.services.demo import seed_plans
    from bnplctl.services.users import list_users, public_user

    settings = get_settings()
    if not settings.embedded and not allow_external:
        raise ConfigError(
            "demo writes sample data: unset BNPL_DATABASE_URL to use the embedded database, "
            "or pass --allow-external"
        )
    if settings.embedded:
        message(
            f"embedded PostgreSQL in {settings.data_dir / 'pgdata'} (first start takes a moment)"
        )
    sample = files("bnplctl.data").joinpath("users.csv")
    with sample.open("rb") as stream:
        report = import_users(
            read_rows(stream, "csv", USER_COLUMNS), actor=current_actor(), source="demo"
        )
    message("Sample users: two rows are invalid on purpose (a bad card, a minor).")
    finish_batch(
        report,
        OutputFormat.table,
        rejects=None,
        key_name="user_id",
        title="Demo users import",
        exit_on_rejects=False,
    )
    with session_scope() as session:
        new_plans = seed_plans(session, business_today(), actor=current_actor())
    message(f"demo plans created: {len(new_plans)}")
    today = business_today()
    if already_swept(today):
        message(f"already swept for {today}")
    else:
        sweep = sweep_job(as_of=today, dry_run=False, actor=current_actor())
        message(
            f"overdue sweep for {today}: {sweep.installments_marked_overdue} "
            f"installment(s) OVERDUE, {sweep.users_marked_debt} user(s) DEBT_USER"
        )
    with session_scope() as session:
        shown = [public_user(user) for user in list_users(session, status=None, limit=20)]
        debt = debt_of(session, "usr-001", today)
    render_list(shown, OutputFormat.table, columns=USER_LIST_COLUMNS, title="Users (masked)")
    render_nested(
        debt,
        OutputFormat.table,
        child_key="overdue_installments",
        child_columns=OVERDUE_COLUMNS,
        title="Debt of usr-001",
        child_title="Overdue installments",
    )
    status_command(OutputFormat.table)
