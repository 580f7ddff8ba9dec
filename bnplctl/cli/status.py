"""``bnplctl status``: the health dashboard."""

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import OutputFormat, OutputOption, for_people
from bnplctl.errors import ExitCode


def status(output: OutputOption = OutputFormat.table) -> None:
    """Health: database and version, migrations, users, plans, debt, refunds, last sweep,
    the secret keys.

    Exit 0 healthy, 69 unhealthy (schema behind, no successful sweep for the business
    date 30 minutes after BNPL_SWEEP_AT in BNPL_TIMEZONE, the last sweep failed, the key
    file missing or not the database's, the primary key older than
    BNPL_KEY_MAX_AGE_DAYS, a key rotation unfinished), 75
    database unreachable. A date whose sweep was reverted counts as handled: a note says
    how to sweep it again. The Docker HEALTHCHECK runs it.

    Example: bnplctl status -o json
    """
    from bnplctl import clock
    from bnplctl.cli.output import render_dashboard, render_one
    from bnplctl.db import SCHEMA_HEAD, revision_or_problem
    from bnplctl.errors import Unavailable
    from bnplctl.services.status import gather, unreachable

    context = app_context()
    try:
        with context.db.unit(commit=False, check_schema=False) as work:
            revision, problem = revision_or_problem(work.connection)
            report = gather(
                work.connection,
                revision=revision,
                head=SCHEMA_HEAD,
                schema_problem=problem,
                now=clock.now(),
                business_date=context.clock.today(),
                timezone=context.settings.timezone,
                sweep_at=context.settings.sweep_at,
                key_file=context.settings.key_file,
                key_max_age_days=context.settings.key_max_age_days,
            )
    except Unavailable as exc:
        report = unreachable(exc.message, SCHEMA_HEAD)
    if for_people(output):
        render_dashboard(report)
    else:
        render_one(report, output)
    if not report["database"]["reachable"]:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if not report["healthy"]:
        raise typer.Exit(ExitCode.UNHEALTHY)
