"""``bnplctl audit``: the audit trail."""

from enum import StrEnum
from typing import Annotated

import typer

from bnplctl.cli.options import MAX_LIMIT, OutputFormat, OutputOption

app = typer.Typer(
    help="The audit trail: who changed what, and when.\n\n"
    "Example: bnplctl audit list --entity user",
    rich_markup_mode=None,
)

AUDIT_COLUMNS = ("id", "occurred_at", "actor", "action", "entity", "entity_id", "details")


class Entity(StrEnum):
    """What an audit event can be about (a typo is a usage error, not "no rows")."""

    user = "user"
    plan = "plan"
    installment = "installment"
    refund = "refund"
    sweep = "sweep"
    file = "file"


@app.command("list")
def list_(
    entity: Annotated[
        Entity | None, typer.Option("--entity", help="Only events about this kind of thing.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Only events about this user and their plans and refunds."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO date or timestamp, e.g. 2026-11-01.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="At most this many events.")
    ] = 100,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Audit events, newest first.

    Example: bnplctl audit list --entity user --since 2026-11-01

    Example: bnplctl audit list --user usr-001 -o json
    """
    from bnplctl.cli.output import render_list
    from bnplctl.db import session_scope
    from bnplctl.services.audit import list_events, parse_since, public_event

    since_at = parse_since(since) if since else None
    with session_scope() as session:
        events = list_events(
            session,
            entity=entity.value if entity is not None else None,
            user_id=user,
            since=since_at,
            limit=limit,
        )
        shown = (public_event(event) for event in events)  # rendered as they arrive
        render_list(shown, output, columns=AUDIT_COLUMNS, title="Audit events")
