"""The overdue sweep (rule 3): set-based SQL, one sweep at a time.

Two statements do the work whatever the row count: one marks the late UPCOMING
installments OVERDUE, one marks their owners DEBT_USER. A session-level advisory
lock keeps a second sweep out (it exits 75 at once); the lock dies with the
connection, so a crashed sweep leaves none behind. The marking transaction takes the
debt lock exclusively (``services/locks.py``). Every run is recorded in ``sweep_runs``
(RUNNING, then SUCCEEDED or FAILED). These functions never begin or end a transaction:
``jobs.sweep_job`` owns them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from bnplctl.errors import Unavailable
from bnplctl.services.audit import USER_STATUS_CHANGED, insert_events

SWEEP_LOCK_ID = 0x62_6E_70_6C_5357  # "bnpl" + "SW"

_MARK_INSTALLMENTS = text(
    """
    UPDATE installments
    SET status = 'OVERDUE', overdue_since = :business_date, overdue_run_id = :run_id
    WHERE status = 'UPCOMING' AND due_date < :cutoff
    """
)
# Each user marked gets one ``user.status_changed`` event (rule 3), written by the same
# statement, at the unit's clock.
_MARK_USERS = text(
    """
    WITH marked AS (
        UPDATE users SET status = 'DEBT_USER', updated_at = :now
        WHERE status = 'NORMAL'
          AND user_id IN (SELECT user_id FROM installments WHERE status = 'OVERDUE')
        RETURNING user_id
    ), status_changes AS (
        SELECT user_id, 'NORMAL' AS from_status, 'DEBT_USER' AS to_status,
               jsonb_build_object('run_id', CAST(:run_id AS bigint),
                                  'business_date', CAST(:business_date AS date)) AS details
        FROM marked
    ), audited AS ("""  # noqa: S608 - a fixed fragment, no input
    + USER_STATUS_CHANGED
    + """)
    SELECT count(*) FROM marked
    """
)


@dataclass(frozen=True)
class SweepResult:
    run_id: int | None
    business_date: date
    dry_run: bool
    installments_marked_overdue: int
    users_marked_debt: int
    duration_seconds: float
    already_swept: bool

    def public(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["business_date"] = self.business_date.isoformat()
        shown["duration_seconds"] = round(self.duration_seconds, 3)
        return shown


def cutoff_for(business_date: date, grace_days: int) -> date:
    """Installments due strictly before this date are late."""
    return business_date - timedelta(days=grace_days)


def try_lock(connection: Connection) -> None:
    """The session-level lock that keeps a second sweep out (exit 75 at once)."""
    held = connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": SWEEP_LOCK_ID})
    if not held.scalar_one():
        raise Unavailable("another sweep holds the lock; retry later")


def unlock(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SWEEP_LOCK_ID})


def handled(connection: Connection, business_date: date) -> str | None:
    """``SUCCEEDED`` when a run swept ``business_date`` and stands, ``REVERTED`` when
    the runs that swept it were all reverted, None when none did."""
    outcome: str | None = connection.execute(
        text(
            "SELECT max(outcome) FROM sweep_runs WHERE business_date = :business_date"
            " AND outcome IN ('SUCCEEDED', 'REVERTED') AND NOT dry_run"
        ),
        {"business_date": business_date},
    ).scalar_one()  # 'SUCCEEDED' sorts after 'REVERTED'
    return outcome


def last_success(connection: Connection, business_date: date) -> datetime | None:
    finished: datetime | None = connection.execute(
        text(
            "SELECT max(finished_at) FROM sweep_runs"
            " WHERE business_date = :business_date AND outcome = 'SUCCEEDED' AND NOT dry_run"
        ),
        {"business_date": business_date},
    ).scalar_one()
    return finished


def close_interrupted(connection: Connection, now: datetime) -> None:
    """Runs left RUNNING by a crash (we hold the lock, so none is live) become FAILED."""
    connection.execute(
        text(
            "UPDATE sweep_runs SET outcome = 'FAILED', error_class = 'Interrupted',"
            " finished_at = coalesce(finished_at, :now) WHERE outcome = 'RUNNING'"
        ),
        {"now": now},
    )


def start_run(
    connection: Connection, business_date: date, actor: str, now: datetime, *, cutoff: date
) -> int:
    run_id: int = connection.execute(
        text(
            "INSERT INTO sweep_runs (business_date, cutoff, dry_run, started_at, outcome, actor)"
            " VALUES (:business_date, :cutoff, false, :started_at, 'RUNNING', :actor) RETURNING id"
        ),
        {"business_date": business_date, "cutoff": cutoff, "started_at": now, "actor": actor},
    ).scalar_one()
    return run_id


def mark_overdue(
    connection: Connection,
    cutoff: date,
    now: datetime,
    *,
    business_date: date,
    run_id: int | None,
    actor: str,
) -> tuple[int, int]:
    """The two set-based statements of rule 3, under the exclusive debt lock; returns
    (installments, users) changed. Each installment marked remembers the business date
    and the run (``overdue_since``, ``overdue_run_id``; a dry run has no run), each user
    marked gets its audit event."""
    from bnplctl.services import locks

    locks.for_sweep(connection)
    installments = connection.execute(
        _MARK_INSTALLMENTS,
        {"cutoff": cutoff, "business_date": business_date, "run_id": run_id},
    ).rowcount
    users = connection.execute(
        _MARK_USERS,
        {"now": now, "actor": actor, "run_id": run_id, "business_date": business_date},
    ).scalar_one()
    return int(installments), int(users)


def finish_run(
    connection: Connection, run_id: int, installments: int, users: int, actor: str, now: datetime
) -> None:
    connection.execute(
        text(
            "WITH finished AS ("  # noqa: S608 - fixed fragments, no input
            " UPDATE sweep_runs SET outcome = 'SUCCEEDED', finished_at = :finished_at,"
            "  installments_marked_overdue = :installments, users_marked_debt = :users,"
            "  overdue_amount = (SELECT coalesce(sum(amount_due), 0) FROM installments"
            "   WHERE status = 'OVERDUE'),"
            "  debt_users = (SELECT count(*) FROM users WHERE status = 'DEBT_USER')"
            " WHERE id = :run_id RETURNING id, business_date) "
            + insert_events(
                "SELECT :now, :actor, 'sweep.run', 'sweep', id::text, NULL, jsonb_build_object("
                " 'business_date', business_date, 'installments_marked_overdue', :installments,"
                " 'users_marked_debt', :users) FROM finished"
            )
        ),
        {
            "run_id": run_id,
            "finished_at": now,
            "now": now,
            "installments": installments,
            "users": users,
            "actor": actor,
        },
    )


def refresh_statistics(connection: Connection) -> None:
    """The sweep moves many rows from UPCOMING to OVERDUE at once; without fresh statistics
    the planner keeps believing there are no OVERDUE rows until autovacuum catches up, and
    picks plans that scan the whole overdue index for every user (seen in the benchmark).

    ANALYZE locks each table as it reaches it, until the commit: users first, then
    installments, the order in which a batch chunk locks them (``locks.for_batch_chunk``);
    the other order deadlocked with a payments file's chunk (found by a test)."""
    connection.execute(text("ANALYZE users (status), installments (status, user_id)"))


def fail_run(connection: Connection, run_id: int, error_class: str, now: datetime) -> None:
    connection.execute(
        text(
            "UPDATE sweep_runs SET outcome = 'FAILED', error_class = :error_class,"
            " finished_at = :finished_at WHERE id = :run_id AND outcome = 'RUNNING'"
        ),
        {"run_id": run_id, "error_class": error_class[:200], "finished_at": now},
    )


# --- undoing a run (rule 11) -------------------------------------------------------------

# A run that marked nothing (a re-run for a date already swept, an earlier date, a night
# with nothing newly late) changed nothing that a revert could undo: it neither is the run
# to revert nor stands in its way.
_LATEST_MARKING = text(
    """
    SELECT id FROM sweep_runs r
    WHERE outcome = 'SUCCEEDED' AND NOT dry_run
      AND (installments_marked_overdue > 0 OR users_marked_debt > 0
           OR EXISTS (SELECT 1 FROM installments i
                      WHERE i.status = 'OVERDUE' AND i.overdue_run_id = r.id))
    ORDER BY id DESC
    LIMIT 1
    """
)
_UNMARK = text(
    """
    UPDATE installments
    SET status = 'UPCOMING', overdue_since = NULL, overdue_run_id = NULL
    WHERE status = 'OVERDUE' AND overdue_run_id = :run_id
    RETURNING user_id
    """
)
# The run becomes REVERTED, and so do the runs after it that marked nothing: their dates
# stood on its work (a re-run found its installments OVERDUE already), so once it is
# undone they are not swept either, and the scheduler and ``status`` say so.
_MARK_REVERTED = text(
    """
    WITH reverted AS (
        UPDATE sweep_runs SET outcome = 'REVERTED', reverted_at = :now
        WHERE id = :run_id
           OR (id > :run_id AND outcome = 'SUCCEEDED' AND NOT dry_run
               AND installments_marked_overdue = 0 AND users_marked_debt = 0)
        RETURNING id, business_date
    ), audited AS ("""  # noqa: S608 - fixed fragments, no input
    + insert_events(
        """
        SELECT :now, :actor, 'sweep.reverted', 'sweep', id::text, NULL,
               CASE WHEN id = :run_id
                   THEN jsonb_build_object(
                       'business_date', business_date, 'installments_restored', :installments,
                       'users_restored', :users)
                   ELSE jsonb_build_object(
                       'business_date', business_date, 'installments_restored', 0,
                       'users_restored', 0, 'with_run', :run_id)
               END
        FROM reverted"""
    )
    + """
    )
    SELECT id FROM reverted WHERE id <> :run_id ORDER BY id
    """
)


@dataclass(frozen=True)
class RevertResult:
    run_id: int
    dry_run: bool
    installments_restored: int
    users_restored: int
    runs_reverted_with_it: list[int]

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _holds(connection: Connection, run_id: int) -> bool:
    """Whether installments are OVERDUE by the run: marked by it, or reopened by a
    reversal (rule 12) under its cutoff, which takes the run's id."""
    return bool(
        connection.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM installments"
                " WHERE status = 'OVERDUE' AND overdue_run_id = :run_id)"
            ),
            {"run_id": run_id},
        ).scalar()
    )


def check_revertible(connection: Connection, run_id: int) -> None:
    """Only the latest successful run that marked something (or holds installments a
    reversal made OVERDUE under its cutoff), not yet reverted, can be undone (exit 3
    otherwise; 4 for a run that does not exist). Later runs that marked nothing do not
    count."""
    from bnplctl.errors import NotFound, Refused

    run = connection.execute(
        text(
            "SELECT outcome, installments_marked_overdue, users_marked_debt FROM sweep_runs"
            " WHERE id = :run_id AND NOT dry_run"
        ),
        {"run_id": run_id},
    ).first()
    if run is None:
        raise NotFound(f"sweep run {run_id} not found")
    latest = connection.execute(_LATEST_MARKING).scalar()
    if run.outcome == "REVERTED":
        why = "already reverted"
    elif run.outcome != "SUCCEEDED":
        why = str(run.outcome)
    elif not (
        run.installments_marked_overdue or run.users_marked_debt or _holds(connection, run_id)
    ):
        why = "it marked nothing (there is nothing to undo)"
    elif latest != run_id:
        why = f"not the latest run that marked something (that is run {latest})"
    else:
        return
    raise Refused(f"sweep run {run_id} cannot be reverted: {why}")


def revert(
    connection: Connection, run_id: int, *, now: datetime, actor: str
) -> tuple[int, int, list[int]]:
    """Rule 11, under the exclusive debt lock: the run's installments still OVERDUE become
    UPCOMING, rule 4 restores their owners (each restoration audited with the run), the
    run and the runs after it that marked nothing are REVERTED; returns (installments,
    users) restored and the ids of those later runs."""
    from bnplctl.services import locks
    from bnplctl.services.settlement import settle

    locks.for_sweep(connection)
    business_date = connection.execute(
        text("SELECT business_date FROM sweep_runs WHERE id = :run_id"), {"run_id": run_id}
    ).scalar_one()
    owners = [str(row.user_id) for row in connection.execute(_UNMARK, {"run_id": run_id})]
    settled = settle(
        connection,
        plan_ids=[],
        user_ids=owners,
        now=now,
        actor=actor,
        cause={"run_id": run_id, "business_date": business_date.isoformat()},
    )
    installments, users = len(owners), len(settled.users_restored)
    with_it = connection.execute(
        _MARK_REVERTED,
        {"run_id": run_id, "now": now, "actor": actor, "installments": installments,
         "users": users},
    ).scalars().all()  # fmt: skip
    return installments, users, [int(other) for other in with_it]
