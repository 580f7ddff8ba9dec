"""The jobs cron and the scheduler run: the same functions, whoever calls them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from bnplctl.services.sweep import RevertResult, SweepResult

if TYPE_CHECKING:
    from bnplctl.context import Context


def sweep_job(
    context: Context,
    *,
    as_of: date | None,
    dry_run: bool,
    warn: Callable[[str], None] | None = None,
) -> SweepResult:
    """Rule 3 for ``as_of`` (default: today in BNPL_TIMEZONE), on a connection of its own.

    The units of work, in turn on that connection (``db.units``): take the one-sweep lock;
    close runs a crash left RUNNING and record this one; mark, under the exclusive debt
    lock, and finish the run; refresh the planner's statistics. A failure marks the run
    FAILED. A dry run is the marking unit rolled back (no run recorded, so no run id),
    which keeps its counts the real ones.
    """
    import time

    from bnplctl.services import sweep

    started = time.perf_counter()
    clock, actor = context.clock, context.acting
    business_date = as_of or clock.today()
    cutoff = sweep.cutoff_for(business_date, context.settings.grace_days)
    with context.db.units() as next_unit:
        with next_unit() as work:
            sweep.try_lock(work.connection)
        try:
            if dry_run:
                with next_unit(commit=False) as work:  # the marking statements, rolled back
                    already = sweep.last_success(work.connection, business_date) is not None
                    installments, users = sweep.mark_overdue(
                        work.connection, cutoff, clock.now(), business_date=business_date,
                        run_id=None, actor=actor,
                    )  # fmt: skip
                return SweepResult(
                    None,
                    business_date,
                    True,
                    installments,
                    users,
                    time.perf_counter() - started,
                    already,
                )
            with next_unit() as work:
                already = sweep.last_success(work.connection, business_date) is not None
                now = clock.now()
                sweep.close_interrupted(work.connection, now)
                run_id = sweep.start_run(work.connection, business_date, actor, now, cutoff=cutoff)
            try:
                with next_unit() as work:
                    installments, users = sweep.mark_overdue(
                        work.connection, cutoff, now, business_date=business_date,
                        run_id=run_id, actor=actor,
                    )  # fmt: skip
                    sweep.finish_run(
                        work.connection, run_id, installments, users, actor, clock.now()
                    )
            except BaseException as exc:  # the driver's error, under the exit code it became
                _record_failure(next_unit, run_id, type(exc.__cause__ or exc).__name__, clock.now)
                raise
            if installments:
                _refresh_statistics(next_unit, run_id, warn)
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
            _unlock_quietly(next_unit)


def revert_job(context: Context, *, run_id: int, dry_run: bool) -> RevertResult:
    """Rule 11 on a connection of its own: under the one-sweep lock (a sweep running: 75),
    check the run can be undone, then undo it in one unit of work (a dry run: the same
    unit, rolled back)."""
    from bnplctl.services import sweep

    with context.db.units() as next_unit:
        with next_unit() as work:
            sweep.try_lock(work.connection)
        try:
            with next_unit(commit=not dry_run) as work:
                sweep.check_revertible(work.connection, run_id)
                installments, users, with_it = sweep.revert(
                    work.connection, run_id, now=context.clock.now(), actor=context.acting
                )
            return RevertResult(run_id, dry_run, installments, users, with_it)
        finally:
            _unlock_quietly(next_unit)


def _refresh_statistics(
    next_unit: Callable[..., Any], run_id: int, warn: Callable[[str], None] | None
) -> None:
    """The planner's statistics after a marking (``sweep.refresh_statistics``): an
    optimisation, so a failure (the connection lost, a lock timeout) is said, not raised:
    the run has committed and stands."""
    from bnplctl.services import sweep

    why = _best_effort(next_unit, sweep.refresh_statistics)
    if why is not None and warn is not None:
        warn(
            f"sweep run {run_id} committed; refreshing the planner's statistics failed"
            f" ({why}): autovacuum will refresh them, or run ANALYZE users, installments"
        )


def _record_failure(
    next_unit: Callable[..., Any], run_id: int, error_class: str, now: Callable[[], Any]
) -> None:
    """Best effort: on a live connection, mark the run FAILED (the connection gone, the
    next sweep closes this run as Interrupted)."""
    from bnplctl.services.sweep import fail_run

    _best_effort(next_unit, lambda connection: fail_run(connection, run_id, error_class, now()))


def _unlock_quietly(next_unit: Callable[..., Any]) -> None:
    """Best effort: a dead connection has released its lock already."""
    from bnplctl.services.sweep import unlock

    _best_effort(next_unit, unlock)


def _best_effort(next_unit: Callable[..., Any], step: Callable[[Any], object]) -> str | None:
    """``step(connection)`` in a unit of its own, after the job's work: a failure of the
    database (the connection lost, a lock) is returned as why, never raised."""
    from sqlalchemy.exc import SQLAlchemyError

    from bnplctl.errors import BnplError

    try:
        with next_unit() as work:
            step(work.connection)
    except (SQLAlchemyError, BnplError) as exc:
        return exc.message if isinstance(exc, BnplError) else type(exc).__name__
    return None


def purge_job(context: Context) -> int:
    """Delete expired idempotency keys; returns how many."""
    from bnplctl.services.idempotency import purge_expired

    with context.db.unit() as work:
        session = work.session
        return purge_expired(session)


def already_swept(context: Context, business_date: date) -> str | None:
    """What the ledger says was done for ``business_date``: ``SUCCEEDED`` (swept),
    ``REVERTED`` (swept, then undone by an operator), or None."""
    from bnplctl.services.sweep import handled

    with context.db.unit(commit=False) as work:
        return handled(work.connection, business_date)
