"""``bnplctl scheduler``: the long-lived process for containers and hosts without cron."""

from typing import Annotated

import typer

app = typer.Typer(
    help="The long-lived scheduler: nightly sweep, hourly key purge.\n\n"
    "Example: BNPL_SWEEP_AT=02:00 BNPL_TIMEZONE=Asia/Tashkent bnplctl scheduler run",
    rich_markup_mode=None,
)


@app.command("run")
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run the due jobs (catch-up sweep, purge) and exit.")
    ] = False,
) -> None:
    """Run the sweep daily at BNPL_SWEEP_AT in BNPL_TIMEZONE and purge expired keys hourly.

    On start it catches up: when the ledger has no successful sweep for the last
    business date, it sweeps now. A failing job is logged and retried; SIGTERM or
    SIGINT finish the running job and exit 0. With --once, the exit code is the first
    failed job's (75: the database is unreachable; 143 or 130: a signal stopped it),
    0 when all ran. Logs: one line per event on stderr, a configuration error at start
    included (BNPL_LOG_FORMAT=json for JSON lines; a failure's line has its exit_code).

    Example: bnplctl scheduler run --once
    """
    from bnplctl.cli.app import current_actor
    from bnplctl.scheduler import run as run_scheduler

    code = run_scheduler(current_actor(), once=once)
    if code:  # cron is told: the first failed job's code (75: retry later)
        raise typer.Exit(code)
