"""Rule 9's invariants, checked set-based: ``bnplctl verify``.

Each check is one SQL statement over whole tables (no loop over rows) that returns how
many rows break the invariant and up to ``EXAMPLES`` of their ids. The three checks that
compare a plan with its installments share one pass over the installments. All run in
one read-only REPEATABLE READ transaction, so they judge one moment of the database
even while writers run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

EXAMPLES = 10
CHECKS = (
    "debt_status",
    "plan_status",
    "plan_totals",
    "refund_cuts",
    "refund_amounts",
    "payment_cuts",
    "amounts",
)

# The users with an OVERDUE installment come from the partial index on them, once.
_DEBT_STATUS = text(
    """
    SELECT 'debt_status' AS name, count(*) AS violations,
           (array_agg(u.user_id ORDER BY u.user_id))[1:10]::text[] AS examples
    FROM users u
    LEFT JOIN (
        SELECT DISTINCT user_id FROM installments WHERE status = 'OVERDUE'
    ) AS overdue ON overdue.user_id = u.user_id
    WHERE (u.status = 'DEBT_USER') <> (overdue.user_id IS NOT NULL)
    """
)
# plan_status: COMPLETED if and only if every installment is PAID; plan_totals: the
# installments' original amounts sum to the total; refund_cuts: what was cut from the
# installments (original minus due) and not paid by a payment is what the plan's
# COMPLETED refunds applied. The same pass over the installments finds those whose amounts
# are wrong (``amounts``): an unpaid one must still owe something, a PAID one nothing.
_PLANS = text(
    """
    WITH paid_per_installment AS (  -- net of what reversals undid (rule 12)
        SELECT installment_id, sum(amount) AS paid
        FROM (SELECT installment_id, amount FROM payment_allocations
              UNION ALL
              SELECT installment_id, -amount FROM reversal_allocations) AS moves
        GROUP BY installment_id
    ), per_plan AS (
        SELECT i.plan_id,
               bool_and(i.status = 'PAID') AS all_paid,
               sum(i.original_amount) AS original_total,
               sum(i.original_amount - i.amount_due - coalesce(p.paid, 0)) AS cut,
               array_agg(i.id) FILTER (
                   WHERE i.amount_due < 0 OR i.original_amount <= 0
                         OR i.amount_due > i.original_amount
                         OR (i.status = 'PAID') <> (i.amount_due = 0)
               ) AS wrong_amounts
        FROM installments i
        LEFT JOIN paid_per_installment p ON p.installment_id = i.id
        GROUP BY i.plan_id
    ), applied_per_plan AS (
        SELECT plan_id, sum(applied_amount) AS applied
        FROM refunds
        WHERE status = 'COMPLETED' AND plan_id IS NOT NULL
        GROUP BY plan_id
    ), judged AS (
        SELECT p.id,
               (p.status = 'COMPLETED') <> coalesce(i.all_paid, false) AS wrong_status,
               p.total_amount IS DISTINCT FROM i.original_total AS wrong_total,
               coalesce(i.cut, 0) <> coalesce(a.applied, 0) AS wrong_cut
        FROM plans p
        LEFT JOIN per_plan i ON i.plan_id = p.id
        LEFT JOIN applied_per_plan a ON a.plan_id = p.id
    )
    SELECT 'plan_status' AS name, count(*) FILTER (WHERE wrong_status) AS violations,
           (array_agg(id ORDER BY id) FILTER (WHERE wrong_status))[1:10]::text[] AS examples
    FROM judged
    UNION ALL
    SELECT 'plan_totals', count(*) FILTER (WHERE wrong_total),
           (array_agg(id ORDER BY id) FILTER (WHERE wrong_total))[1:10]::text[]
    FROM judged
    UNION ALL
    SELECT 'refund_cuts', count(*) FILTER (WHERE wrong_cut),
           (array_agg(id ORDER BY id) FILTER (WHERE wrong_cut))[1:10]::text[]
    FROM judged
    UNION ALL
    SELECT 'installment_amounts', count(*),
           (array_agg('installment ' || id ORDER BY id))[1:10]::text[]
    FROM (SELECT wrong_amounts FROM per_plan WHERE wrong_amounts IS NOT NULL) AS wrong,
         unnest(wrong.wrong_amounts) AS id
    """
)
_REFUND_AMOUNTS = text(
    """
    SELECT 'refund_amounts' AS name, count(*) AS violations,
           (array_agg(transaction_id ORDER BY id))[1:10]::text[] AS examples
    FROM refunds
    WHERE CASE WHEN status = 'COMPLETED' THEN
                   applied_amount IS NULL OR payout_amount IS NULL
                   OR applied_amount < 0 OR payout_amount < 0
                   OR applied_amount + payout_amount <> amount
               ELSE applied_amount IS NOT NULL OR payout_amount IS NOT NULL
          END
    """
)
# payment_cuts: what payments cut from installments is the payments net of their
# reversals (rule 12): each payment's allocations sum to its amount, each reversal's
# undoing sums to its amount, and no allocation is undone by more than it paid (nor one
# that does not exist).
_PAYMENT_CUTS = text(
    """
    WITH undone AS (
        SELECT payment_id, installment_id, sum(amount) AS undone
        FROM reversal_allocations
        GROUP BY payment_id, installment_id
    ), per_payment AS (
        SELECT a.payment_id, sum(a.amount) AS allocated,
               bool_or(coalesce(u.undone, 0) > a.amount) AS overdone
        FROM payment_allocations a
        LEFT JOIN undone u ON u.payment_id = a.payment_id
                          AND u.installment_id = a.installment_id
        GROUP BY a.payment_id
    ), per_reversal AS (
        SELECT reversal_id, sum(amount) AS undone FROM reversal_allocations GROUP BY reversal_id
    ), wrong AS (
        SELECT 'payment ' || p.id AS example, 1 AS kind, p.id
        FROM payments p
        LEFT JOIN per_payment a ON a.payment_id = p.id
        WHERE p.amount IS DISTINCT FROM a.allocated OR a.overdone
        UNION ALL
        SELECT 'payment ' || u.payment_id, 1, u.payment_id
        FROM undone u
        LEFT JOIN payment_allocations a ON a.payment_id = u.payment_id
                                       AND a.installment_id = u.installment_id
        WHERE a.payment_id IS NULL
        UNION ALL
        SELECT 'reversal ' || r.id, 2, r.id
        FROM payment_reversals r
        LEFT JOIN per_reversal x ON x.reversal_id = r.id
        WHERE r.amount IS DISTINCT FROM x.undone
    )
    SELECT 'payment_cuts' AS name, count(DISTINCT example) AS violations,
           (array_agg(DISTINCT example))[1:10]::text[] AS examples
    FROM wrong
    """
)
# No amount is negative (or zero where it must be positive); an unpaid installment still
# has something due (found with the plans' pass, above). Examples name the table:
# ``installment 17``, ``plan 3``.
_AMOUNTS = text(
    """
    WITH wrong AS (
        SELECT 'plan ' || id AS example, 2 AS kind, id FROM plans WHERE total_amount <= 0
        UNION ALL
        SELECT 'refund ' || id, 3, id FROM refunds WHERE amount <= 0
        UNION ALL
        SELECT 'payment ' || id, 4, id FROM payments WHERE amount <= 0
        UNION ALL
        SELECT 'payment ' || payment_id, 5, payment_id
        FROM payment_allocations WHERE amount <= 0
        UNION ALL
        SELECT 'reversal ' || id, 6, id FROM payment_reversals WHERE amount <= 0
        UNION ALL
        SELECT 'reversal ' || reversal_id, 7, reversal_id
        FROM reversal_allocations WHERE amount <= 0
    )
    SELECT 'amounts' AS name, count(*) AS violations,
           (array_agg(example ORDER BY kind, id))[1:10]::text[] AS examples
    FROM wrong
    """
)


@dataclass(frozen=True)
class CheckResult:
    check: str
    violations: int
    examples: list[str]


# The tables the checks read.
CHECKED_TABLES = (
    "users",
    "plans",
    "installments",
    "refunds",
    "payments",
    "payment_allocations",
    "payment_reversals",
    "reversal_allocations",
)

_MISSING_TABLES = text(
    "SELECT name FROM unnest(CAST(:names AS text[])) AS name WHERE to_regclass(name) IS NULL"
)


def run_checks(connection: Connection) -> list[CheckResult]:
    """Every check of rule 9, in one read-only snapshot; the caller owns the connection."""
    _begin_snapshot(connection)
    return _checks(connection)


def schema_and_checks(connection: Connection) -> tuple[list[str], list[CheckResult]]:
    """The tables the checks read that the schema lacks (dropped by hand, a restore that
    left one out), and, when there is none, every check (``run_checks``)."""
    _begin_snapshot(connection)
    found = connection.execute(_MISSING_TABLES, {"names": list(CHECKED_TABLES)})
    missing = [str(name) for name in found.scalars()]
    return missing, [] if missing else _checks(connection)


def _begin_snapshot(connection: Connection) -> None:
    connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    # Whole-table aggregates compile nothing worth JIT's start-up time.
    connection.execute(text("SET LOCAL jit = off"))


def _checks(connection: Connection) -> list[CheckResult]:
    found: dict[str, CheckResult] = {}
    for statement in (_DEBT_STATUS, _PLANS, _REFUND_AMOUNTS, _PAYMENT_CUTS, _AMOUNTS):
        for row in connection.execute(statement):
            found[row.name] = CheckResult(row.name, int(row.violations), list(row.examples or []))
    installments = found.pop("installment_amounts")
    others = found["amounts"]
    found["amounts"] = CheckResult(
        "amounts",
        installments.violations + others.violations,
        (installments.examples + others.examples)[:EXAMPLES],
    )
    return [found[name] for name in CHECKS]


def report(results: list[CheckResult]) -> dict[str, Any]:
    return {
        "ok": all(result.violations == 0 for result in results),
        "checks": [
            {"check": r.check, "violations": r.violations, "examples": r.examples} for r in results
        ],
    }
