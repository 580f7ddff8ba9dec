"""The jobs cron and the scheduler run: the same functions, whoever calls them."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from bnplctl.services.sweep import RevertResult, SweepResult

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def sweep_job(*, as_of: date | None, dry_run: bool, actor: str) -> SweepResult:
    """Rule 3 for ``as_of`` (default: today in BNPL_TIMEZONE), on a connection of its own.

    The units of work: take the one-sweep lock; close runs a crash left RUNNING and
    record this one; mark, under the exclusive debt lock, and finish the run; refresh the
    planner's statistics. A failure marks the run FAILED. A dry run is the marking unit
    rolled back (no run recorded, so no run id), which keeps its counts the real ones.
    """
    import time

    from bnplctl import clock
    from bnplctl.config import get_settings
    from bnplctl.db import connect, get_engine
    from bnplctl.services import sweep

    started = time.perf_counter()
    settings = get_settings()
    business_date = as_of or clock.business_today()
    cutoff = sweep.cutoff_for(business_date, settings.grace_days)
    with connect(get_engine()) as connection:
        with connection.begin():
            sweep.try_lock(connection)
        try:
            with connection.begin() as unit:
                already = sweep.last_success(connection, business_date) is not None
                now = clock.now()
                if dry_run:  # the marking statements themselves, rolled back
                    installments, users = sweep.mark_overdue(
                        connection, cutoff, now, business_date=business_date, run_id=None,
                        actor=actor,
                    )  # fmt: skip
                    unit.rollback()
                    return SweepResult(
                        None,
                        business_date,
                        True,
                        installments,
                        users,
                        time.perf_counter() - started,
                        already,
                    )
                sweep.close_interrupted(connection, now)
                run_id = sweep.start_run(connection, business_date, actor, now)
            try:
                with connection.begin():
                    installments, users = sweep.mark_overdue(
                        connection, cutoff, now, business_date=business_date, run_id=run_id,
                        actor=actor,
                    )  # fmt: skip
                    sweep.finish_run(connection, run_id, installments, users, actor, clock.now())
            except BaseException as exc:
                _record_failure(connection, run_id, type(exc).__name__)
                raise
            if installments:
                with connection.begin():
                    sweep.refresh_statistics(connection)
            return SweepResult(
                run_id,
                business_date,
                False,
                installments,
                users,
                time.perf_counter() - started,
                already,
            )
        finally:
            _unlock_quietly(connection)


def revert_job(*, run_id: int, dry_run: bool, actor: str) -> RevertResult:
    """Rule 11 on a connection of its own: under the one-sweep lock (a sweep running: 75),
    check the run can be undone, then undo it in one transaction (a dry run: the same
    transaction, rolled back)."""
    from bnplctl import clock
    from bnplctl.db import connect, get_engine
    from bnplctl.services import sweep

    with connect(get_engine()) as connection:
        with connection.begin():
            sweep.try_lock(connection)
        try:
            with connection.begin() as unit:
                sweep.check_revertible(connection, run_id)
                installments, users, with_it = sweep.revert(
                    connection, run_id, now=clock.now(), actor=actor
                )
                if dry_run:
                    unit.rollback()
            return RevertResult(run_id, dry_run, installments, users, with_it)
        finally:
            _unlock_quietly(connection)


def _record_failure(connection: Connection, run_id: int, error_class: str) -> None:
    """Best effort: on a live connection, mark the run FAILED."""
    from sqlalchemy.exc import SQLAlchemyError

    from bnplctl import clock
    from bnplctl.services.sweep import fail_run

    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            fail_run(connection, run_id, error_class, clock.now())
    except SQLAlchemyError:
        pass  # the connection is gone; the next sweep closes this run as Interrupted


def _unlock_quietly(connection: Connection) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from bnplctl.services.sweep import unlock

    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            unlock(connection)
    except SQLAlchemyError:
        pass  # a dead connection has released its lock already


def purge_job() -> int:
    """Delete expired idempotency keys; returns how many."""
    from bnplctl.db import session_scope
    from bnplctl.services.idempotency import purge_expired

    with session_scope() as session:
        return purge_expired(session)


def already_swept(business_date: date) -> str | None:
    """What the ledger says was done for ``business_date``: ``SUCCEEDED`` (swept),
    ``REVERTED`` (swept, then undone by an operator), or None."""
    from bnplctl.db import connect, get_engine
    from bnplctl.services.sweep import handled

    with connect(get_engine()) as connection:
        return handled(connection, business_date)
