"""The health dashboard: is the database there, migrated, and was the last sweep recent?"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from bnplctl.money import format_amount

STALE_SWEEP = timedelta(hours=26)


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
    business_date: date | None = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, from a reachable database."""
    version = str(connection.execute(text("SHOW server_version")).scalar_one())
    report: dict[str, Any] = {
        "healthy": False,
        "database": {"reachable": True, "version": version},
        "migrations": {"revision": revision, "head": head, "at_head": revision == head},
        "problems": [],
    }
    if revision != head:
        report["problems"].append(
            f"schema at {revision or 'none'}, head is {head}: run `bnplctl db upgrade`"
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
        "secret_key": _secret_key(connection),
    }
    key = report["secret_key"]
    if key["state"] in ("mismatch", "missing", "unusable"):
        what = {
            "missing": "file is missing",
            "mismatch": "does not match",
            "unusable": "file cannot be used (unreadable, or not 32 bytes as hex)",
        }[key["state"]]
        report["problems"].append(f"the secret key {what} (BNPL_SECRET_KEY_FILE: {key['file']})")
    last = report["last_sweep"]
    if last is None:
        report["problems"].append("no sweep has run yet")
    elif last["outcome"] != "SUCCEEDED":
        report["problems"].append(f"the last sweep {last['outcome']}")
    elif last["stale"]:
        report["problems"].append(
            f"the last successful sweep is {last['age_hours']} h old (more than 26 h)"
        )
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
        "stale": age > STALE_SWEEP,
    }


def _secret_key(connection: Connection) -> dict[str, Any]:
    from bnplctl.services.keys import key_state

    state = key_state(connection)
    file = None if state.path is None else str(state.path)
    return {"file": file, "state": state.state, "exposed": state.exposed}


def unreachable(message: str, head: str) -> dict[str, Any]:
    return {
        "healthy": False,
        "database": {"reachable": False, "error": message},
        "migrations": {"revision": None, "head": head, "at_head": None},
        "problems": [message],
    }
