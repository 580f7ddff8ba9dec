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
    """Load the demo users into the embedded database and show them, masked.

    Runs on the embedded database (BNPL_DATABASE_URL unset); the first run
    initialises it. Running it again changes nothing: the rows are duplicates.

    Example: bnplctl demo
    """
    from importlib.resources import files

    from bnplctl.cli.app import current_actor
    from bnplctl.cli.batch import finish_batch
    from bnplctl.cli.output import message, render_list
    from bnplctl.cli.users import USER_LIST_COLUMNS
    from bnplctl.config import get_settings
    from bnplctl.db import session_scope
    from bnplctl.errors import ConfigError
    from bnplctl.importing.batch import USER_COLUMNS, import_users
    from bnplctl.importing.readers import read_rows
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
        shown = [public_user(user) for user in list_users(session, status=None, limit=20)]
    render_list(shown, OutputFormat.table, columns=USER_LIST_COLUMNS, title="Users (masked)")
