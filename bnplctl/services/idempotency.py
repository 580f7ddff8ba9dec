"""Request idempotency (rule 8): a key runs its request once; repeats get the first result.

The key row is inserted first (``INSERT … ON CONFLICT DO NOTHING``) in the same
transaction as the work, so two processes racing with one key serialise on the
primary key: the second waits for the first to commit, then replays its result.
A refused request rolls back together with its key, so a corrected retry can
use the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from bnplctl import clock
from bnplctl.errors import Conflict
from bnplctl.validators import idempotency_key

KEY_TTL = timedelta(hours=24)


def fingerprint(command: str, request: dict[str, Any]) -> str:
    canonical = json.dumps({"command": command, "request": request}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(session: Session, key: str, command: str, request_fingerprint: str) -> bool:
    """True when this transaction now owns the key (new, or the old one had expired)."""
    now = clock.now()
    claimed = session.execute(
        text(
            "INSERT INTO idempotency_keys (key, command, request_fingerprint, expires_at)"
            " VALUES (:key, :command, :fingerprint, :expires_at)"
            " ON CONFLICT (key) DO UPDATE SET command = EXCLUDED.command,"
            "  request_fingerprint = EXCLUDED.request_fingerprint, result = NULL,"
            "  created_at = :now, expires_at = EXCLUDED.expires_at"
            " WHERE idempotency_keys.expires_at <= :now"
            " RETURNING key"
        ),
        {
            "key": key,
            "command": command,
            "fingerprint": request_fingerprint,
            "expires_at": now + KEY_TTL,
            "now": now,
        },
    ).first()
    return claimed is not None


def run_once(
    session: Session,
    *,
    key: str | None,
    command: str,
    request: dict[str, Any],
    work: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Run ``work`` unless ``key`` was used before; returns (result, replayed)."""
    if key is None:
        return work(), False
    key = idempotency_key(key)
    request_fingerprint = fingerprint(command, request)
    if not _claim(session, key, command, request_fingerprint):
        stored = session.execute(
            text(
                "SELECT command, request_fingerprint, result FROM idempotency_keys WHERE key = :key"
            ),
            {"key": key},
        ).one()
        if stored.command != command or stored.request_fingerprint != request_fingerprint:
            raise Conflict(f"idempotency key {key} was already used for a different request")
        return dict(stored.result or {}), True
    result = work()
    session.execute(
        text("UPDATE idempotency_keys SET result = CAST(:result AS json) WHERE key = :key"),
        {"key": key, "result": json.dumps(result, default=str)},
    )
    return result, False


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Delete expired keys; returns how many (the scheduler runs this hourly)."""
    deleted = session.execute(
        text("DELETE FROM idempotency_keys WHERE expires_at <= :now"),
        {"now": now or clock.now()},
    )
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]
