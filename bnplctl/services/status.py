"""The health dashboard: is the database there, migrated, and is the due sweep done?

The sweep is due for a business date once ``BNPL_SWEEP_AT`` has passed in
``BNPL_TIMEZONE`` (``scheduler.due_business_date``), plus ``SWEEP_GRACE`` so that a
healthcheck does not flap while the nightly job runs. The date counts as handled when a
standing sweep ran for it or a later date (it marks everything that one would), or when
an operator reverted its sweep (``status`` then says how to sweep it again). This
replaces the former "last successful sweep older than 26 h" check: a missed night now
shows 30 minutes after its slot instead of a day later."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from bnplctl.money import format_amount

SWEEP_GRACE = timedelta(minutes=30)


def _counts(connection: Connection, table: str, names: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = dict(
        connection.execute(
            text(f"SELECT status, count(*) FROM {table} GROUP BY status")  # noqa: S608 - fixed names
        ).all()
    )
    return {name: int(found.get(name, 0)) for name in names}


def gather(
    connection: Connection,
    *,
    revision: str | None,
    head: str,
    now: datetime,
    schema_problem: str | None = None,
    business_date: date | None = None,
    timezone: str = "UTC",
    sweep_at: str = "02:00",
    key_file: Path | None = None,
    key_max_age_days: int = 365,
) -> dict[str, Any]:
    """Everything the dashboard shows, from a reachable database."""
    version = str(connection.execute(text("SHOW server_version")).scalar_one())
    report: dict[str, Any] = {
        "healthy": False,
        "database": {"reachable": True, "version": version},
        "migrations": {"revision": revision, "head": head, "at_head": revision == head},
        "problems": [],
        "notes": [],
    }
    if revision != head or schema_problem is not None:
        report["migrations"]["at_head"] = False
        report["problems"].append(
            schema_problem
            or f"schema at {revision or 'none'}, head is {head}: run `bnplctl db upgrade`"
        )
        return report
    overdue_count, overdue_amount = connection.execute(
        text(
            "SELECT count(*), coalesce(sum(amount_due), 0) FROM installments"
            " WHERE status = 'OVERDUE'"
        )
    ).one()
    report |= {
        "users": _counts(connection, "users", ("NORMAL", "DEBT_USER")),
        "plans": _counts(connection, "plans", ("ACTIVE", "COMPLETED")),
        "installments": {
            "overdue": int(overdue_count),
            "overdue_amount": format_amount(Decimal(overdue_amount)),
        },
        "refunds": _counts(
            connection, "refunds", ("PENDING", "APPROVED", "REJECTED", "CANCELLED", "COMPLETED")
        ),
        "last_sweep": _last_sweep(connection, now),
        "secret_key": _secret_key(connection, key_file),
    }
    key = report["secret_key"]
    if key["state"] in ("mismatch", "missing", "unusable"):
        what = {
            "missing": "file is missing",
            "mismatch": "does not match",
            "unusable": "file cannot be used (unreadable, or not a keyring nor a key as hex)",
        }[key["state"]]
        report["problems"].append(f"the secret key {what} (BNPL_SECRET_KEY_FILE: {key['file']})")
    from bnplctl.services.keys import key_report, summary

    keys = key_report(connection, key_file, max_age_days=key_max_age_days, now=now, counts=False)
    key["keys"] = summary(keys)
    report["problems"].extend(p for p in keys["problems"] if p not in keys["file_problems"])
    last = report["last_sweep"]
    if last is None:
        report["problems"].append("no sweep has run yet")
    else:
        if last["outcome"] == "FAILED":
            report["problems"].append(f"the last sweep {last['outcome']}")
        elif last["outcome"] == "RUNNING" and not _sweep_lock_held(connection):
            # RUNNING under the lock is the 02:00 job at work, left to the due-date check
            report["problems"].append(
                f"sweep run {last['run_id']} is RUNNING but no sweep holds the lock: it died"
                " (killed?); the next sweep closes it as FAILED: run `bnplctl debt sweep`"
            )
        _check_due_sweep(connection, report, now=now, timezone=timezone, sweep_at=sweep_at)
    if business_date is not None:
        latest = connection.execute(
            text(
                "SELECT max(business_date) FROM sweep_runs"
                " WHERE outcome = 'SUCCEEDED' AND NOT dry_run"
            )
        ).scalar()
        if latest is not None and latest > business_date:
            report["problems"].append(
                f"a sweep ran for a business date in the future ({latest.isoformat()}):"
                " customers may be in debt too early"
            )
    report["healthy"] = not report["problems"]
    return report


# Whether the due business date was swept: a standing run for it or a later date; else
# its latest reverted run.
_DUE_SWEEP = text(
    """
    SELECT
        EXISTS (SELECT 1 FROM sweep_runs
                WHERE outcome = 'SUCCEEDED' AND NOT dry_run
                  AND business_date >= :due) AS swept,
        (SELECT id FROM sweep_runs
         WHERE outcome = 'REVERTED' AND NOT dry_run AND business_date = :due
         -- the run --revert was given, not a no-op re-run reverted with it
         ORDER BY installments_marked_overdue + users_marked_debt > 0 DESC, id DESC
         LIMIT 1) AS reverted_run
    """
)


def _check_due_sweep(
    connection: Connection, report: dict[str, Any], *, now: datetime, timezone: str, sweep_at: str
) -> None:
    from bnplctl.scheduler import due_business_date

    due = due_business_date(now - SWEEP_GRACE, timezone, sweep_at)
    swept, reverted_run = connection.execute(_DUE_SWEEP, {"due": due}).one()
    grace = int(SWEEP_GRACE / timedelta(minutes=1))
    report["due_sweep"] = {
        "business_date": due.isoformat(),
        "state": "swept" if swept else "reverted" if reverted_run else "missing",
    }
    if swept:
        return
    day = due.isoformat()
    if reverted_run is not None:
        report["notes"].append(
            f"the sweep for {day} was reverted (run {reverted_run}); sweep it again with"
            f" `bnplctl debt sweep --as-of {day}`"
        )
        return
    report["problems"].append(
        f"no successful sweep for business date {day} (due at {sweep_at} {timezone},"
        f" {grace} min grace): check the cron job or run `bnplctl debt sweep`"
    )


def _sweep_lock_held(connection: Connection) -> bool:
    """Whether a session of this database holds the one-sweep lock (read from pg_locks,
    never by taking it: a sweep starting that moment would be turned away)."""
    from bnplctl.services.sweep import SWEEP_LOCK_ID

    return bool(
        connection.execute(
            text(
                """
                SELECT EXISTS (
                    SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND granted
                      AND database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())
                      AND ((classid::bigint << 32) | objid::bigint) = :id
                )
                """
            ),
            {"id": SWEEP_LOCK_ID},
        ).scalar_one()
    )


def _last_sweep(connection: Connection, now: datetime) -> dict[str, Any] | None:
    row = connection.execute(
        text(
            "SELECT id, business_date, started_at, finished_at, outcome, error_class,"
            " installments_marked_overdue, users_marked_debt"
            " FROM sweep_runs WHERE NOT dry_run ORDER BY started_at DESC, id DESC LIMIT 1"
        )
    ).first()
    if row is None:
        return None
    age = now - (row.finished_at or row.started_at)
    return {
        "run_id": row.id,
        "business_date": row.business_date.isoformat(),
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "outcome": row.outcome,
        "error_class": row.error_class,
        "installments_marked_overdue": row.installments_marked_overdue,
        "users_marked_debt": row.users_marked_debt,
        "age_hours": round(age / timedelta(hours=1), 1),
    }


def _secret_key(connection: Connection, key_file: Path | None) -> dict[str, Any]:
    from bnplctl.services.secret_key import key_state

    state = key_state(connection, key_file)
    file = None if state.path is None else str(state.path)
    return {"file": file, "state": state.state, "exposed": state.exposed}


def unreachable(message: str, head: str) -> dict[str, Any]:
    return {
        "healthy": False,
        "database": {"reachable": False, "error": message},
        "migrations": {"revision": None, "head": head, "at_head": None},
        "problems": [message],
    }
