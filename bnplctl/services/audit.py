"""Audit events: who did what to which entity, never with raw personal data.

The one writer of audit rows: ``insert_events`` is the only spelling of an
``INSERT INTO audit_events`` in the code (``tests/test_layout.py`` holds every other
module to it), and it refuses a statement whose rows do not take the unit of work's
clock and actor (``:now``, ``:actor``), so no event takes the server's own ``now()``
(the column has no default: migration 0008). ``record`` writes one event through the
ORM, at the same clock. ``USER_STATUS_CHANGED`` is the one set of ``user.status_changed``
events for the statements that change users' status in a set (the sweep marking
debtors, rule 4 restoring them). The ORM is imported only by the functions that use it:
the sweep and the batch paths run on SQLAlchemy Core.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from bnplctl.models import AuditEvent
    from bnplctl.services.listing import ListRequest, Page

EVENT_COLUMNS = "occurred_at, actor, action, entity, entity_id, user_id, details"
# How a statement's rows begin: the unit of work's clock and actor, as bound parameters
# (SQLAlchemy's ``:name``, or the DB-API's ``%(name)s`` for a statement run on psycopg2).
_CLOCK_AND_ACTOR = re.compile(
    r"\s*(SELECT|VALUES\s*\()\s*(:now,\s*:actor|%\(now\)s,\s*%\(actor\)s),"
)


def insert_events(rows: str) -> str:
    """``INSERT INTO audit_events`` of ``rows``: a ``SELECT`` (or ``VALUES``) giving
    ``EVENT_COLUMNS`` in order, starting with the unit's ``:now`` and ``:actor`` (any
    other start is a programming error, raised where the statement is built)."""
    if not _CLOCK_AND_ACTOR.match(rows):
        raise ValueError(f"audit rows must start with the unit's now and actor: {rows[:60]!r}")
    return f"INSERT INTO audit_events ({EVENT_COLUMNS})\n{rows}"


# A user's status changed, one event per user, as a data-modifying CTE: the statement that
# includes it names a CTE ``status_changes (user_id, from_status, to_status, details)``
# (``details``: jsonb added to ``from`` and ``to``, e.g. the sweep run) and binds ``:now``
# (the unit of work's clock) and ``:actor``.
USER_STATUS_CHANGED = insert_events(
    """
    SELECT :now, :actor, 'user.status_changed', 'user', user_id, user_id,
           jsonb_build_object('from', from_status, 'to', to_status) || details
    FROM status_changes
"""
)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    user_id: str | None = None,
    details: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> None:
    """One audit event, at the unit of work's ``now`` when given, else the one clock's
    (``clock.now()``, as every statement that writes an event binds ``:now``), never the
    server's own ``now()``."""
    from bnplctl import clock
    from bnplctl.models import AuditEvent

    session.add(
        AuditEvent(
            occurred_at=occurred_at or clock.now(),
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            user_id=user_id,
            details=details or {},
        )
    )


def list_events(
    session: Session,
    *,
    entity: str | None = None,
    user_id: str | None = None,
    since: datetime | None = None,
    request: ListRequest | None = None,
) -> Page[AuditEvent]:
    """Newest first unless sorted, fetched in batches; ``user_id`` keeps the events about
    that user and what they own."""
    from sqlmodel import col, select

    from bnplctl.services.listing import ListRequest, ordering, page
    from bnplctl.sorting import AUDIT_SORT

    request = request if request is not None else ListRequest()

    from bnplctl.models import AuditEvent

    query = select(AuditEvent)
    if entity is not None:
        query = query.where(AuditEvent.entity == entity)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if since is not None:
        query = query.where(col(AuditEvent.occurred_at) >= since)
    fields = {name: col(getattr(AuditEvent, name)) for name in AUDIT_SORT}
    newest = [col(AuditEvent.occurred_at).desc(), col(AuditEvent.id).desc()]
    order = ordering(request.sort, fields, newest, col(AuditEvent.id))
    return page(session, query.order_by(*order), request)


def public_event(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "actor": event.actor,
        "action": event.action,
        "entity": event.entity,
        "entity_id": event.entity_id,
        "user_id": event.user_id,
        "details": event.details,
    }
