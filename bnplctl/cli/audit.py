"""``bnplctl audit``: the audit trail."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import (
    AllOption,
    LimitOption,
    OutputFormat,
    OutputOption,
    checked_option,
    for_people,
    sort_option,
)
from bnplctl.sorting import AUDIT_SORT

app = typer.Typer(
    help="The audit trail: who changed what, and when.\n\n"
    "Example: bnplctl audit list --entity user",
    rich_markup_mode=None,
)

AUDIT_COLUMNS = (
    "id", "occurred_at", "actor", "action", "entity", "entity_id", "user_id", "details"
)  # fmt: skip
# A table for a person: what an event was about in one column, details one per line.
AUDIT_TABLE = ("id", "occurred_at", "actor", "action", "about", "user_id", "details")
AUDIT_DROP = ("user_id", "id", "actor")


class Entity(StrEnum):
    """What an audit event can be about (a typo is a usage error, not "no rows")."""

    user = "user"
    plan = "plan"
    installment = "installment"
    refund = "refund"
    payment = "payment"
    sweep = "sweep"
    file = "file"
    key = "key"


@app.command("list")
def list_(
    entity: Annotated[
        Entity | None, typer.Option("--entity", help="Only events about this kind of thing.")
    ] = None,
    user: Annotated[
        str | None,
        checked_option(
            "--user", "user", "Only events about this user and their plans and refunds."
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        checked_option("--since", "since", "ISO date or timestamp, e.g. 2026-11-01."),
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(AUDIT_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Audit events, newest first.

    Example: bnplctl audit list --entity user --since 2026-11-01

    Example: bnplctl audit list --user usr-001 -o json
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.audit import list_events, public_event

    request = list_request(limit, every, sort)
    since_at = since
    with app_context().db.unit() as work:
        session = work.session
        events = list_events(
            session,
            entity=entity.value if entity is not None else None,
            user_id=user,
            since=since_at,
            request=request,
        )
        shown = (public_event(event) for event in events)  # rendered as they arrive
        if for_people(output):
            rows = (
                {**event, "about": f"{event['entity']} {event['entity_id']}"} for event in shown
            )
            render_list(rows, output, columns=AUDIT_TABLE, title="Audit events", drop=AUDIT_DROP)
        else:
            render_list(shown, output, columns=AUDIT_COLUMNS)
        report_cut(events)
