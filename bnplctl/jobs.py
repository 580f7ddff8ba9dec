"""The jobs cron and the scheduler run: the same functions, whoever calls them."""

from __future__ import annotations

from datetime import date

from bnplctl.services.sweep import SweepResult


def sweep_job(*, as_of: date | None, dry_run: bool, actor: str) -> SweepResult:
    """Rule 3 for ``as_of`` (default: today in BNPL_TIMEZONE), on its own connection."""
    from bnplctl import clock
    from bnplctl.config import get_settings
    from bnplctl.db import connect, get_engine
    from bnplctl.services.sweep import run_sweep

    settings = get_settings()
    business_date = as_of or clock.business_today()
    with connect(get_engine()) as connection:
        return run_sweep(
            connection,
            business_date=business_date,
            grace_days=settings.grace_days,
            dry_run=dry_run,
            actor=actor,
        )


def purge_job() -> int:
    """Delete expired idempotency keys; returns how many."""
    from bnplctl.db import session_scope
    from bnplctl.services.idempotency import purge_expired

    with session_scope() as session:
        return purge_expired(session)


def already_swept(business_date: date) -> bool:
    """Whether the ledger has a successful sweep for ``business_date``."""
    from bnplctl.db import connect, get_engine
    from bnplctl.services.sweep import last_success

    with connect(get_engine()) as connection:
        return last_success(connection, business_date) is not None
