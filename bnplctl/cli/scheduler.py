"""``bnplctl scheduler``: the long-lived process for containers and hosts without cron."""

from pathlib import Path
from typing import Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import LogFileOption

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
    log_file: LogFileOption = None,
) -> None:
    """Run the sweep daily at BNPL_SWEEP_AT in BNPL_TIMEZONE and purge expired keys hourly.

    On start it catches up: when the ledger has no successful sweep for the last
    business date, it sweeps now. A failing job is logged and retried; SIGTERM or
    SIGINT finish the running job and exit 0. With --once, the exit code is the first
    failed job's (75: the database is unreachable; 143 or 130: a signal stopped it),
    0 when all ran. Logs: one line per event on stderr, a configuration error at start
    included (BNPL_LOG_FORMAT=json for JSON lines; a failure's line has its exit_code).
    With --log-file, the lines are appended to that file as JSON, and the last one
    gives the run's exit_code.

    Example: bnplctl scheduler run --once --log-file /var/log/bnplctl/scheduler.jsonl
    """
    from bnplctl.cli.context import app_context, job_log, log_to
    from bnplctl.scheduler import run as run_scheduler

    log_to(log_file, "scheduler run")
    log = job_log()
    code = run_scheduler(app_context(), once=once, log_file=log.path if log else None)
    if code:  # cron is told: the first failed job's code (75: retry later)
        raise typer.Exit(code)


@app.command("crontab")
def crontab(
    log_dir: Annotated[
        Path,
        typer.Option(
            "--log-dir",
            metavar="PATH",
            help="Where the jobs append their JSON log lines (made when missing, mode 0750).",
        ),
    ] = Path("/var/log/bnplctl"),
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Where the jobs read BNPL_DATABASE_URL from when it holds a password"
            " (default: the env file it comes from now, else /etc/bnplctl/bnplctl.env).",
        ),
    ] = None,
    executable: Annotated[
        str | None,
        typer.Option(
            "--executable",
            metavar="PATH",
            help="The bnplctl the jobs run (default: this one, by its absolute path).",
        ),
    ] = None,
) -> None:
    """Print a crontab that runs the nightly sweep and the hourly catch-up for this
    installation, under cron's own bare environment.

    It names this bnplctl by its absolute path, sets PATH=/usr/bin:/bin,
    BNPL_ACTOR=cron and every BNPL_* setting in force now (from the environment and
    .env; paths made absolute), and each job opens its own log file (--log-file), one
    JSON line a run with its exit_code. A database URL with a password is never
    printed: the jobs read it from an env file (BNPL_ENV_FILE), and stderr says which
    file to write when it is not there yet.

    Install it: bnplctl scheduler crontab > bnplctl.cron, then crontab bnplctl.cron.

    Example: bnplctl scheduler crontab --log-dir /var/log/bnplctl
    """
    import shlex

    from bnplctl.cli.output import message
    from bnplctl.config import given_settings
    from bnplctl.crontab import build, running_executable

    printed = build(
        app_context().settings,
        given_settings(),
        executable=shlex.quote(executable) if executable else running_executable(),
        log_dir=log_dir,
        env_file=env_file,
    )
    typer.echo(printed.text, nl=False)
    if printed.env_file_to_write is not None:
        message(
            f"BNPL_DATABASE_URL holds a password: write the line BNPL_DATABASE_URL=... into"
            f" {printed.env_file_to_write} (mode 0600) for the jobs to read it"
        )
