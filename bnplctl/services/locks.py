"""The lock protocol: which locks each writer takes, in one order, so rule 9 holds.

Every writer of debt state (installments, plans, refunds, a user's status) takes, in
its transaction and in this order:

1. the *debt lock*, a transaction-level advisory lock: **shared** by every writer but the
   sweep, **exclusive** by the sweep's marking transaction. A sweep therefore never runs
   beside a payment, a refund move, a webhook chunk or a plan creation: it waits for those
   in flight to commit, and they wait for it (a waiting sweep goes first: PostgreSQL
   queues a new shared request behind a waiting exclusive one).
2. the **users** it changes: a command locks their rows (``FOR UPDATE``, in ``user_id``
   order); a batch chunk, which touches thousands, locks the ``users``, ``refunds`` and
   ``installments`` tables at once in ``EXCLUSIVE`` mode (readers never wait).
3. a payment's reference, when a command records one (an advisory lock on its hash);
4. only then the refunds and installments it reads and writes.

Two writers for the same user thus run one after the other, and the second one's
statements see the first one's commit: rule 4's "no OVERDUE installment left" and "every
installment PAID" are decided on committed data (no write skew). Nobody takes a user lock
after a refund or installment lock, so no cycle, so no deadlock. ``docs/design.md`` has
the proof pair by pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from bnplctl.sql import Statement, run

if TYPE_CHECKING:
    from bnplctl.db import Executor

DEBT_LOCK_ID = 0x62_6E_70_6C_4454  # "bnpl" + "DT"

_SHARED = Statement("SELECT pg_advisory_xact_lock_shared(:id)")
_EXCLUSIVE = Statement("SELECT pg_advisory_xact_lock(:id)")
_USERS = Statement(
    'SELECT user_id FROM users WHERE user_id = ANY(:ids) ORDER BY user_id COLLATE "C" FOR UPDATE'
)
_REFERENCE = Statement("SELECT pg_advisory_xact_lock(hashtextextended(:reference, 0))")
# One round trip: the shared debt lock, then the three tables a chunk changes.
_CHUNK = Statement(
    "SELECT pg_advisory_xact_lock_shared(:id);"
    " LOCK TABLE users, refunds, installments IN EXCLUSIVE MODE"
)


def for_user_writes(executor: Executor, user_ids: Iterable[str]) -> list[str]:
    """A command's locks: the shared debt lock, then the users' rows in ``user_id`` order.
    Returns the ids that exist."""
    run(executor, _SHARED, {"id": DEBT_LOCK_ID})
    wanted = sorted(set(user_ids))
    if not wanted:
        return []
    return [str(row[0]) for row in run(executor, _USERS, {"ids": wanted})]


def for_reference(executor: Executor, reference: str) -> None:
    """A payment reference's lock, taken after the users' (two commands recording the same
    new reference for different users: the second waits, then finds the first's)."""
    run(executor, _REFERENCE, {"reference": reference})


def for_batch_chunk(executor: Executor) -> None:
    """A batch chunk's locks: the shared debt lock, then the three tables it changes."""
    run(executor, _CHUNK, {"id": DEBT_LOCK_ID})


def for_sweep(executor: Executor) -> None:
    """The sweep's marking transaction: the debt lock, exclusive."""
    run(executor, _EXCLUSIVE, {"id": DEBT_LOCK_ID})
