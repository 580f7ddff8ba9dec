"""``bnplctl db``: migrations and the embedded server."""

from typing import Any

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import OutputFormat, OutputOption

app = typer.Typer(
    help="Schema migrations and the embedded PostgreSQL server.\n\nExample: bnplctl db status",
    rich_markup_mode=None,
)


@app.command("upgrade")
def upgrade() -> None:
    """Apply the migrations up to head (Alembic).

    Example: BNPL_DATABASE_URL=postgresql://bnpl@db/bnpl bnplctl db upgrade
    """
    from bnplctl.cli.output import message
    from bnplctl.db import upgrade_to_head

    with app_context().db.unit(check_schema=False) as work:
        before, after = upgrade_to_head(work.connection)
    if before == after:
        message(f"schema already at head ({after})")
    else:
        message(f"schema upgraded from {before or 'none'} to {after}")


@app.command("status")
def status(output: OutputOption = OutputFormat.table) -> None:
    """Schema revision vs head, the URL (password masked), the embedded server's state.

    Example: bnplctl db status -o json
    """
    from bnplctl.cli.output import render_one
    from bnplctl.db import SCHEMA_HEAD, current_revision, embedded_state, masked_url

    settings = app_context().settings
    report: dict[str, Any] = {"mode": "embedded" if settings.embedded else "external"}
    reachable = True
    if settings.embedded:
        state = embedded_state(settings.data_dir)
        report |= {
            "data_dir": str(state.data_dir),
            "server": "running" if state.running else "stopped",
            "pid": state.pid,
        }
        reachable = state.running
    if reachable:
        with app_context().db.unit(commit=False, check_schema=False) as work:
            report["url"] = masked_url(str(work.connection.engine.url))
            revision = current_revision(work.connection)
        report |= {"revision": revision, "head": SCHEMA_HEAD, "at_head": revision == SCHEMA_HEAD}
    else:
        report |= {"revision": None, "head": SCHEMA_HEAD, "at_head": None}
    render_one(report, output, title="Database")


@app.command("stop")
def stop() -> None:
    """Stop the embedded server (the next command starts it again).

    Example: bnplctl db stop
    """
    from bnplctl.cli.output import message
    from bnplctl.db import stop_embedded

    settings = app_context().settings
    if not settings.embedded:
        message("BNPL_DATABASE_URL is set: there is no embedded server to stop")
        return
    if stop_embedded(settings.data_dir):
        message("embedded PostgreSQL stopped")
    else:
        message("embedded PostgreSQL was not running")
