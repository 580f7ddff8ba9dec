"""Rule 6, the one place it is written: the refund state machine moves forward only.

PENDING -> APPROVED | REJECTED | CANCELLED, and APPROVED -> COMPLETED once rule 7 has
applied it; a final state is never overwritten. Commands (``refunds approve|reject|
cancel``) and webhook rows are both *moves* (a refund and a target state) written to the
transaction's ``refund_moves`` table and decided by one statement, ``_MOVE``: each move is
``applied``, ``duplicate`` (the refund is in that state already), ``stale`` (older than
the last update applied) or ``conflict`` (a final state, another target). An approval is
not moved here but handed to rule 7 (``services/refund_application.py``) through the
``refunds_approved`` table, which takes the refund from PENDING to COMPLETED in the same
transaction. A ``processing`` row (target PENDING) for a PENDING refund is applied: its
event is recorded and nothing changes.

The caller holds the locks of ``services/locks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bnplctl.services.audit import insert_events
from bnplctl.sql import Statement, run

if TYPE_CHECKING:
    from bnplctl.db import Executor

# The targets a command may ask for; a webhook row may also ask for PENDING (processing).
COMMAND_TARGETS = {"approve": "APPROVED", "reject": "REJECTED", "cancel": "CANCELLED"}

# The transaction's work tables (emptied at commit; a dry run, one transaction for a whole
# file, empties them per chunk).
CREATE_WORK_TABLES = """
    CREATE TEMP TABLE IF NOT EXISTS refund_moves (
        seq integer NOT NULL,
        line integer,
        transaction_id text NOT NULL,
        target text NOT NULL,
        event_id text,
        occurred_at timestamptz,
        merchant_reference text,
        note text,
        refund_id bigint,
        outcome text,
        reason text,
        round integer
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS refunds_approved (
        seq integer NOT NULL,  -- the row's place in its chunk (a command's: 0)
        refund_id bigint NOT NULL,
        user_id text NOT NULL,
        plan_id bigint,
        amount numeric(12, 2) NOT NULL,
        line integer,
        event_id text,
        occurred_at timestamptz,
        merchant_reference text,
        note text
    ) ON COMMIT DELETE ROWS;
    TRUNCATE refund_moves, refunds_approved;
"""

# One round: every move of ``round`` (at most one per refund) against its refund. A
# webhook row whose event was ingested before (by an earlier file or chunk) is a
# duplicate whatever it asks.
_MOVE = Statement(
    """
    WITH looked_up AS (
        SELECT m.seq, m.line, m.transaction_id, m.refund_id, r.user_id, r.plan_id, r.amount,
               m.target, m.event_id, m.occurred_at, m.merchant_reference, m.note,
               r.status AS current, r.last_event_at, e.event_id IS NOT NULL AS seen_before
        FROM refund_moves m
        JOIN refunds r ON r.id = m.refund_id
        LEFT JOIN webhook_events e ON e.event_id = m.event_id
        WHERE m.round = :round AND m.outcome IS NULL
    ), classified AS (
        SELECT l.*,
               CASE
                   WHEN seen_before THEN 'duplicate'
                   WHEN occurred_at < last_event_at THEN 'stale'
                   WHEN target = 'PENDING' AND current = 'PENDING' THEN 'applied'
                   WHEN target = current
                        OR (target = 'APPROVED' AND current = 'COMPLETED') THEN 'duplicate'
                   WHEN current <> 'PENDING' THEN 'conflict'
                   ELSE 'applied'
               END AS outcome
        FROM looked_up l
    ), handed_to_rule7 AS (
        INSERT INTO refunds_approved (seq, refund_id, user_id, plan_id, amount, line,
                                      event_id, occurred_at, merchant_reference, note)
        SELECT seq, refund_id, user_id, plan_id, amount, line, event_id, occurred_at,
               merchant_reference, note
        FROM classified
        WHERE outcome = 'applied' AND target = 'APPROVED'
    ), moved AS (
        UPDATE refunds r
        SET status = c.target, processed_at = :now, updated_at = :now,
            last_event_at = coalesce(c.occurred_at, r.last_event_at),
            merchant_reference = coalesce(c.merchant_reference, r.merchant_reference),
            decision_reason = c.note
        FROM classified c
        WHERE r.id = c.refund_id AND c.outcome = 'applied'
          AND c.target IN ('REJECTED', 'CANCELLED')
        RETURNING r.id, r.user_id, r.status, c.line, c.event_id, r.decision_reason
    ), audited AS ("""  # noqa: S608 - fixed fragments, no input
    + insert_events(
        """
        SELECT :now, :actor, 'refund.status_changed', 'refund', id::text, user_id,
               jsonb_strip_nulls(jsonb_build_object(
                   'from', 'PENDING', 'to', status, 'source', CAST(:source AS text),
                   'file_id', CAST(:file_id AS bigint), 'line', line, 'event_id', event_id,
                   'decision_reason', decision_reason))
        FROM moved"""
    )
    + """
    ), recorded AS (
        INSERT INTO webhook_events (event_id, refund_id, user_id, status, outcome,
                                    occurred_at, file_id)
        SELECT event_id, refund_id, user_id, target, outcome, occurred_at, :file_id
        FROM classified
        WHERE event_id IS NOT NULL
        ORDER BY seq
        ON CONFLICT (event_id) DO NOTHING
    )
    SELECT line, transaction_id, outcome,
           CASE
               WHEN seen_before THEN 'event ' || event_id || ' was ingested before'
               WHEN outcome = 'stale' THEN 'older than the last applied update'
               WHEN outcome = 'duplicate' THEN 'the refund is already ' || current
               ELSE 'the refund is ' || current || ' already (final)'
           END AS reason,
           current
    FROM classified
    WHERE outcome <> 'applied'
    """
)


@dataclass(frozen=True)
class NotMoved:
    line: int | None
    transaction_id: str
    outcome: str
    reason: str
    current: str


def create_work_tables(executor: Executor) -> None:
    run(executor, CREATE_WORK_TABLES)


def add_command_move(
    executor: Executor, *, refund_id: int, transaction_id: str, target: str, note: str | None
) -> None:
    """A command's one move (round 1); the work tables must exist."""
    run(
        executor,
        "INSERT INTO refund_moves (seq, transaction_id, target, note, refund_id, round)"
        " VALUES (0, :transaction_id, :target, :note, :refund_id, 1)",
        {"transaction_id": transaction_id, "target": target, "note": note, "refund_id": refund_id},
    )


def move(
    executor: Executor,
    *,
    round_number: int,
    source: str,
    file_id: int | None,
    now: datetime,
    actor: str,
) -> list[NotMoved]:
    """Decide and apply one round of moves; returns the moves not applied."""
    rows = run(
        executor,
        _MOVE,
        {
            "round": round_number,
            "source": source,
            "file_id": file_id,
            "now": now,
            "actor": actor,
        },
    )
    return [
        NotMoved(row.line, str(row.transaction_id), str(row.outcome), str(row.reason), row.current)
        for row in rows
    ]
