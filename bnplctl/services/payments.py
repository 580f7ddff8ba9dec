"""Rule 10, the one place it is written: a payment is recorded and allocated.

A payment goes to one installment, or to a user: then to the user's unpaid installments
oldest due first (due date, then plan id, then sequence). Each allocation lowers the
installment's ``amount_due``; one brought to zero is PAID (rule 4 then follows, through
``settlement.settle``). A payment larger than what is still due where it goes is refused
whole (``overpayment``): nothing of it is applied. A reference recorded before makes the
payment a ``duplicate`` (the same content) or a ``conflict`` (another one).

Every channel stages its payments alike and runs the same statements: a payments file a
chunk at a time, ``installments pay`` its payments as one chunk (``stage_rows``, then
``apply_chunk`` under the caller's locks). Staging COPYs the rows into the temporary table
``payment_rows`` and classifies them into ``payment_moves`` (``_PREPARE``), each with its
round; ``_RECORDED`` finds the references recorded before, and ``_APPLY`` runs once per
round: one statement records the payments, their allocations, the installments' new
amounts and the audit events, whatever the number of rows. A command's payment may leave
its amount out: all that is due where it goes (``installments pay`` without ``--amount``).
An installment paid off is PAID at its payment's ``paid_at`` (a file's row may say when
the money was received; a command's is now). A round holds at most one payment per user,
so the payments of a round never share an installment and each one sees what is due
where it goes as committed before the round. The caller holds the locks of
``services/locks.py``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bnplctl.money import format_amount
from bnplctl.services.audit import USER_STATUS_CHANGED, insert_events
from bnplctl.sql import Statement, run

if TYPE_CHECKING:
    from sqlmodel import Session

    from bnplctl.db import Executor
    from bnplctl.models import Payment
    from bnplctl.services.listing import ListRequest, Page
    from bnplctl.services.settlement import Settled

# One pass, no CTE joined to another (a batch chunk runs with index lookups only, and the
# planner cannot estimate a CTE's rows): ``unpaid`` is each payment of the round beside
# the unpaid installments where it goes (found through the user's ACTIVE plans: an unpaid
# installment's plan is ACTIVE by rule 4), in the order it pays them, with what is due
# before each and in all, carrying as few columns as the windows need; a payment with
# nothing due where it goes has one row without an installment. A payment without an
# amount (a command's "all that is due") is all that is due where it goes, and none when
# nothing is: then it is refused as overpaid. Each payment was given its id when it was
# staged (a refused one leaves a gap in the sequence), so its
# allocations name it in the same statement; what else a payment says is looked up in
# ``payment_moves`` by its ``seq`` (its primary key). Sibling CTEs read the state before the
# statement's writes: one payment per user per round keeps them apart.
#
# Plans that do not depend on statistics (issue 28): every statement of a chunk reaches the
# large tables (plans, installments, users, payments) from the chunk's rows through a
# LATERAL subquery with OFFSET 0, which the planner keeps as it is (it does not pull it up
# into a join): a lookup per row, by index; the payer's plans first, then each plan's
# installments, each a subquery of its own (a plans-installments join inside the lookup,
# without column statistics, scanned every installment for each payment: tables
# VACUUMed but never ANALYZEd, 5,000 payments a chunk, took minutes). Joined plainly, the
# plan rested on statistics that a bulk load has not yet (nothing analysed), or that lie
# (a table analysed when it held only rolled-back rows, after a ``--dry-run``, passes for
# empty however it grows): the whole table, or plans × installments, materialised once
# and scanned again for every row of the chunk (a 100,000-row file took 976 s instead of 8).
_APPLY = Statement(
    """
    WITH unpaid AS MATERIALIZED (
        SELECT r.seq, r.payment_id,
               coalesce(r.amount, nullif(sum(i.amount_due) OVER (PARTITION BY r.seq), 0))
                   AS amount,
               coalesce(r.paid_at, :now) AS paid_at, i.id,
               i.plan_id, i.user_id, i.status, i.amount_due,
               coalesce(sum(i.amount_due) OVER paying_order, 0) AS due_before,
               coalesce(sum(i.amount_due) OVER (PARTITION BY r.seq), 0) AS due_in_all,
               row_number() OVER paying_order AS nth
        FROM payment_moves r
        LEFT JOIN LATERAL (
            SELECT i.*
            FROM (SELECT p.id FROM plans p
                  WHERE p.user_id = r.user_id AND p.status = 'ACTIVE'
                  OFFSET 0) p  -- the payer's plans, by index (above)
            CROSS JOIN LATERAL (
                SELECT i.id, i.plan_id, i.user_id, i.status, i.amount_due, i.due_date,
                       i.sequence
                FROM installments i
                WHERE i.plan_id = p.id AND i.status <> 'PAID'
                  AND (r.installment_id IS NULL OR i.id = r.installment_id)
                OFFSET 0  -- then each plan's installments, by index
            ) i
        ) i ON true
        WHERE r.round = :round AND r.kind <> 'reversal'
        WINDOW paying_order AS (
            PARTITION BY r.seq ORDER BY i.due_date, i.plan_id, i.sequence
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), shares AS MATERIALIZED (
        SELECT seq, payment_id, paid_at, id AS installment_id, plan_id, user_id, status,
               amount_due, least(amount_due, amount - due_before) AS share
        FROM unpaid
        WHERE id IS NOT NULL AND amount <= due_in_all AND amount > due_before
    ), fitting AS MATERIALIZED (
        SELECT r.payment_id, r.reference, r.user_id, r.installment_id, u.amount, u.paid_at,
               r.original_id
        FROM unpaid u
        JOIN payment_moves r ON r.seq = u.seq
        WHERE u.nth = 1 AND u.amount <= u.due_in_all
    ), recorded AS (
        INSERT INTO payments (id, reference, user_id, installment_id, amount, source, paid_at,
                              actor, reinstates)
        SELECT payment_id, reference, user_id, installment_id, amount, :source, paid_at, :actor,
               original_id
        FROM fitting
    ), allocated AS (
        INSERT INTO payment_allocations (payment_id, installment_id, user_id, amount)
        SELECT payment_id, installment_id, user_id, share FROM shares
    ), reduced AS (
        UPDATE installments i
        SET amount_due = i.amount_due - s.share,
            status = CASE WHEN s.share = i.amount_due THEN 'PAID' ELSE i.status END,
            paid_at = CASE WHEN s.share = i.amount_due THEN s.paid_at ELSE i.paid_at END
        FROM shares s
        WHERE i.id = s.installment_id
    ), audited AS ("""  # noqa: S608 - fixed fragments, no input
    + insert_events(
        """
        SELECT :now, :actor, 'payment.recorded', 'payment', payment_id::text, user_id,
               jsonb_build_object('amount', amount::text, 'source', :source)
               || jsonb_strip_nulls(jsonb_build_object(
                   'reference', reference, 'installment_id', installment_id,
                   'reinstates', original_id))
        FROM fitting
        UNION ALL
        SELECT :now, :actor, 'installment.paid', 'installment', installment_id::text, user_id,
               jsonb_build_object('plan_id', plan_id, 'amount', share::text, 'was', status,
                                  'payment_id', payment_id)
        FROM shares
        WHERE share = amount_due"""
    )
    + """
    )
    SELECT seq AS line, CASE WHEN amount <= due_in_all THEN payment_id END AS payment_id,
           due_in_all AS due, NULL::bigint AS plan_id, NULL::text AS overdue_owner
    FROM unpaid
    WHERE nth = 1
    UNION ALL
    SELECT seq, payment_id, NULL, plan_id, CASE WHEN status = 'OVERDUE' THEN user_id END
    FROM shares
    WHERE share = amount_due
    """
)


@dataclass(frozen=True)
class RoundResult:
    payment_ids: dict[int, int]  # seq -> the payment recorded
    overpaid: dict[int, Decimal]  # seq -> what was due where it went
    plans_paid_off: list[int]
    overdue_owners: list[str]


def _apply(
    executor: Executor, *, round_number: int, source: str, now: datetime, actor: str
) -> RoundResult:
    parameters = {"round": round_number, "source": source, "now": now, "actor": actor}
    rows = run(executor, _APPLY, parameters).all()
    recorded: dict[int, int] = {}
    overpaid: dict[int, Decimal] = {}
    plans: set[int] = set()
    owners: set[str] = set()
    for row in rows:
        if row.plan_id is not None:
            plans.add(int(row.plan_id))
            if row.overdue_owner is not None:
                owners.add(str(row.overdue_owner))
        elif row.payment_id is not None:
            recorded[int(row.line)] = int(row.payment_id)
        else:
            overpaid[int(row.line)] = Decimal(row.due)
    return RoundResult(recorded, overpaid, sorted(plans), sorted(owners))


# --- a chunk of payments: a file's, or a command's ------------------------------------------

# The chunk's rows (COPYed in) and what ``_PREPARE`` and ``_RECORDED`` decided of each. A
# command's payment may have no reference (``installments pay`` without ``--reference``)
# and no amount (without ``--amount``: all that is due where it goes); a file's has both.
CHUNK_TABLES = """
    CREATE TEMP TABLE IF NOT EXISTS payment_rows (
        seq integer NOT NULL,
        line integer NOT NULL,
        reference text,
        amount numeric(12, 2),
        user_id text,
        installment_id bigint,
        paid_at timestamptz,
        kind text,  -- NULL or 'payment'; 'reversal', 'reinstating' (rule 12)
        original_reference text,  -- a reversal's or reinstating row's payment
        note text  -- a reversal's reason (the processor's row type, a command's --reason)
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS payment_moves (
        seq integer PRIMARY KEY,
        line integer NOT NULL,
        reference text,
        amount numeric(12, 2),
        user_id text,
        installment_id bigint,
        paid_at timestamptz,
        kind text NOT NULL,  -- 'payment', 'reversal', 'reinstating' (rule 12)
        original_reference text,
        note text,
        original_id bigint,  -- the payment a reinstating row puts back (its first, if
                             -- that one put back another)
        outcome text,
        reason text,
        after_seq integer,  -- the chunk's row before this one with the same reference
        crosses boolean,  -- ... and that row is another payer's
        round integer,
        payment_id bigint
    ) ON COMMIT DELETE ROWS;
    TRUNCATE payment_rows, payment_moves;
"""
PAYMENT_ROW_COLUMNS = (
    "seq", "line", "reference", "amount", "user_id", "installment_id", "paid_at",
    "kind", "original_reference", "note",
)  # fmt: skip

# Each row of the chunk against the database, in one pass that takes no lock (it runs
# while the chunk before is still being applied, and reads nothing that an earlier chunk
# or another writer can change): whose payment it is (the installment's owner, or the
# user), unknown users and installments. A reversal or reinstating row (rule 12) is the
# payer's of the payment it names: recorded before (payments are never deleted nor
# change hands), else the first payment row of the chunk before it with that reference
# (a window over the rows that share the reference: no join, which a chunk's index
# lookups only would run as a scan per row); a reinstating row pays where that payment
# went. One whose payment is neither is *deferred*: the chunk before may still be
# recording it, so ``_RESOLVE`` looks again under the chunk's locks (and ``_ROUNDS``
# then puts the chunk in rounds again). Each row whose payer is known gets its round:
# its place among the chunk's rows of the same payer, in file order. A row whose
# reference an earlier row of the chunk carries (``after_seq``; payments and
# reinstating rows share one space of references, reversals have their own; a row
# without a reference repeats none) is judged only when that row has been applied or
# refused, as if it were in a chunk of its own: a reference is taken by the first row
# that is recorded, not by the first that appears (``stage_chunk`` then moves it to a
# round after that row's, ``_RECORDED`` judges it). References recorded before the
# chunk are ``_RECORDED``'s to find too, under the chunk's locks. Each payment gets its
# id now, in file order (a reversal gets its own when it is recorded).
_RANKED = """
    ranked AS (
        SELECT p.*,
               CASE WHEN p.ready AND p.reference IS NOT NULL
                    THEN lag(p.seq) OVER same_reference END AS after_seq,
               CASE WHEN p.ready AND p.reference IS NOT NULL
                    THEN lag(p.user_id) OVER same_reference <> p.user_id END AS crosses,
               CASE WHEN p.ready THEN row_number() OVER (
                   PARTITION BY p.user_id, p.ready ORDER BY p.seq) END AS round
        FROM placed p
        WINDOW same_reference AS (
            PARTITION BY p.kind = 'reversal', p.reference, p.ready ORDER BY p.seq)
    ), numbered AS MATERIALIZED (
        SELECT r.*, CASE WHEN r.ready AND r.kind <> 'reversal' THEN coalesce(
                   r.payment_id, nextval(pg_get_serial_sequence('payments', 'id'))) END
                   AS new_payment_id
        FROM (SELECT * FROM ranked ORDER BY seq) r
    )"""
# What a staging statement tells of the chunk: each row refused (``line`` set), then one
# row (``line`` NULL) with the rows deferred, the rows that repeat another payer's
# reference (``crossing``), the rounds holding a repeat, the round of each payment and of
# each reversal, the rounds holding a reinstating row, and whether a payment asks for all
# that is due.
_SUMMARY = """
    SELECT line, reference, outcome, reason, NULL AS deferred, NULL AS crossing,
           NULL AS repeat_rounds, NULL AS payments, NULL AS reversals, NULL AS reinstating,
           NULL AS all_due
    FROM moved
    WHERE outcome IS NOT NULL
    UNION ALL
    SELECT NULL, NULL, NULL, NULL,
           count(*) FILTER (WHERE outcome IS NULL AND user_id IS NULL),
           count(*) FILTER (WHERE crosses),
           coalesce(array_agg(DISTINCT round) FILTER (WHERE after_seq IS NOT NULL), '{}'),
           coalesce(array_agg(round) FILTER (WHERE round IS NOT NULL
                                            AND kind <> 'reversal'), '{}'),
           coalesce(array_agg(round) FILTER (WHERE round IS NOT NULL
                                            AND kind = 'reversal'), '{}'),
           coalesce(array_agg(DISTINCT round) FILTER (WHERE kind = 'reinstating'
                                                      AND round IS NOT NULL), '{}'),
           coalesce(bool_or(amount IS NULL AND reference IS NOT NULL AND kind <> 'reversal'
                            AND round IS NOT NULL), false)
    FROM moved
"""
_PREPARE = Statement(
    """
    WITH resolved AS (
        SELECT r.seq, r.line, r.reference, r.amount, r.installment_id, r.paid_at,
               coalesce(r.kind, 'payment') AS kind, r.original_reference, r.note,
               CASE WHEN r.installment_id IS NOT NULL THEN i.user_id ELSE u.user_id END AS owner,
               o.id AS original_id, o.user_id AS original_owner,
               o.installment_id AS original_installment,
               CASE WHEN r.kind IS NOT NULL AND r.kind <> 'payment' THEN NULL
                    WHEN r.installment_id IS NOT NULL AND i.id IS NULL
                        THEN 'unknown_installment'
                    WHEN r.installment_id IS NULL AND u.user_id IS NULL THEN 'unknown_user'
                    WHEN r.installment_id IS NOT NULL AND r.user_id IS NOT NULL
                         AND r.user_id <> i.user_id THEN 'invalid'
               END AS outcome,
               CASE WHEN r.kind IS NOT NULL AND r.kind <> 'payment' THEN NULL
                    WHEN r.installment_id IS NOT NULL AND i.id IS NULL
                        THEN 'no installment ' || r.installment_id
                    WHEN r.installment_id IS NULL AND u.user_id IS NULL
                        THEN 'no user with this user_id'
                    WHEN r.installment_id IS NOT NULL AND r.user_id IS NOT NULL
                         AND r.user_id <> i.user_id
                        THEN 'installment ' || r.installment_id || ' is not this user''s'
               END AS reason
        FROM payment_rows r
        LEFT JOIN LATERAL (
            SELECT id, user_id FROM installments WHERE id = r.installment_id OFFSET 0
        ) i ON true
        LEFT JOIN LATERAL (
            SELECT user_id FROM users WHERE user_id = r.user_id OFFSET 0
        ) u ON true
        LEFT JOIN LATERAL (
            SELECT coalesce(reinstates, id) AS id, user_id, installment_id FROM payments
            WHERE reference = r.original_reference
            OFFSET 0
        ) o ON true
    ), found AS (  -- a reversal's or reinstating row's payment among the chunk's rows
        SELECT r.*,
               (array_agg(r.owner) FILTER (WHERE r.kind = 'payment' AND r.outcome IS NULL)
                   OVER earlier)[1] AS earlier_owner,
               (array_agg(r.installment_id) FILTER (
                   WHERE r.kind = 'payment' AND r.outcome IS NULL) OVER earlier)[1]
                   AS earlier_installment
        FROM resolved r
        WINDOW earlier AS (
            PARTITION BY CASE WHEN r.kind = 'payment' THEN r.reference
                              ELSE r.original_reference END
            ORDER BY r.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), placed AS (
        SELECT seq, line, reference, amount, paid_at, kind, original_reference, note,
               original_id, outcome, reason, NULL::bigint AS payment_id,
               CASE WHEN kind = 'payment' THEN owner
                    ELSE coalesce(original_owner, earlier_owner) END AS user_id,
               CASE WHEN kind <> 'reinstating' THEN installment_id
                    WHEN original_owner IS NOT NULL THEN original_installment
                    ELSE earlier_installment END AS installment_id,
               outcome IS NULL AND (CASE WHEN kind = 'payment' THEN owner
                                         ELSE coalesce(original_owner, earlier_owner) END)
                                   IS NOT NULL AS ready
        FROM found
    ), """  # noqa: S608 - fixed fragments, no input
    + _RANKED.strip()
    + """, moved AS (
        INSERT INTO payment_moves (seq, line, reference, amount, user_id, installment_id,
                                   paid_at, kind, original_reference, note, original_id,
                                   outcome, reason, after_seq, crosses, round, payment_id)
        SELECT seq, line, reference, amount, user_id, installment_id, paid_at, kind,
               original_reference, note, original_id, outcome, reason, after_seq, crosses,
               round, new_payment_id
        FROM numbered
        RETURNING *
    )"""
    + _SUMMARY
)
# Under the chunk's locks, once ``_RESOLVE`` has found the payers of the deferred rows:
# the chunk's rows in rounds again, as ``_PREPARE`` put them (the payments keep the ids
# they were given).
_ROUNDS = Statement(
    """
    WITH placed AS (
        SELECT seq, kind, reference, user_id, payment_id,
               outcome IS NULL AND user_id IS NOT NULL AS ready
        FROM payment_moves
    ), """  # noqa: S608 - fixed fragments, no input
    + _RANKED.strip()
    + """, moved AS (
        UPDATE payment_moves m
        SET after_seq = n.after_seq, crosses = n.crosses, round = n.round,
            payment_id = n.new_payment_id
        FROM numbered n
        WHERE m.seq = n.seq AND n.ready
        RETURNING m.*
    )"""
    + _SUMMARY
)
# Under the chunk's locks, when staging deferred rows: the payment each names, recorded
# by now (by the chunk before, or another writer), or ``unknown_payment``.
_RESOLVE = Statement(
    """
    WITH found AS (
        SELECT m.seq, o.id, o.user_id, o.installment_id
        FROM payment_moves m
        CROSS JOIN LATERAL (
            SELECT coalesce(reinstates, id) AS id, user_id, installment_id FROM payments
            WHERE reference = m.original_reference
            OFFSET 0
        ) o
        WHERE m.outcome IS NULL AND m.user_id IS NULL
    ), resolved AS (
        UPDATE payment_moves m
        SET user_id = f.user_id, original_id = f.id,
            installment_id = CASE WHEN m.kind = 'reinstating' THEN f.installment_id
                                  ELSE m.installment_id END
        FROM found f
        WHERE m.seq = f.seq
    ), unknown AS (
        UPDATE payment_moves m
        SET outcome = 'unknown_payment', reason = 'no payment with reference '
                                                  || m.original_reference
        WHERE m.outcome IS NULL AND m.user_id IS NULL
          AND NOT EXISTS (SELECT FROM found f WHERE f.seq = m.seq)
        RETURNING m.line, m.reference, m.outcome, m.reason
    )
    SELECT line, reference, outcome, reason FROM unknown
    """
)
# Under the chunk's locks, before a round's payments: each reinstating row's payment (its
# first, if that one put back another), recorded by now (an earlier round, the chunk
# before, another writer), or ``unknown_payment``: a payment row of the chunk it named
# may have been refused.
_ORIGINALS = Statement(
    """
    WITH found AS (
        SELECT m.seq, coalesce(p.reinstates, p.id) AS id
        FROM payment_moves m
        LEFT JOIN LATERAL (
            SELECT id, reinstates FROM payments WHERE reference = m.original_reference
            OFFSET 0
        ) p ON true
        WHERE m.round = :round AND m.kind = 'reinstating'
    ), known AS (
        UPDATE payment_moves m SET original_id = f.id
        FROM found f
        WHERE m.seq = f.seq AND f.id IS NOT NULL
    ), unknown AS (
        UPDATE payment_moves m
        SET outcome = 'unknown_payment', reason = 'no payment with reference '
                                                  || m.original_reference,
            round = NULL
        FROM found f
        WHERE m.seq = f.seq AND f.id IS NULL
        RETURNING m.line, m.reference, m.outcome, m.reason
    )
    SELECT line, reference, outcome, reason FROM unknown
    """
)
# The rows to put in rounds when references repeat (``services/rounds.py``), in file order.
_TO_ORDER = Statement(
    """
    SELECT seq, user_id, reference, kind, after_seq IS NOT NULL AS repeats
    FROM payment_moves WHERE round IS NOT NULL ORDER BY seq
    """
)
_SET_ROUNDS = Statement(
    """
    UPDATE payment_moves m SET round = v.round
    FROM unnest(CAST(:seqs AS integer[]), CAST(:rounds AS integer[])) AS v(seq, round)
    WHERE m.seq = v.seq AND m.round <> v.round
    """
)
# Under the chunk's locks, before ``_RECORDED``: a payment of all that is due (a command's,
# without an amount) with a reference recorded for the same installment by the payment
# that paid it off (the installment is PAID and that payment was the last one allocated
# to it) asked for what that payment paid, so ``_RECORDED`` finds it the same payment: a
# command retried after it went through is a duplicate. A part payment's reference
# leaves the amount unknown: another payment (a conflict), even when as much is due now.
# Run only for a chunk that holds such a payment (``StagedPayments.all_due``): a file's
# rows always have an amount.
_ALL_DUE = Statement(
    """
    UPDATE payment_moves m
    SET amount = p.amount
    FROM payments p
    WHERE m.amount IS NULL AND m.round IS NOT NULL
      AND p.reference = m.reference AND p.installment_id = m.installment_id
      AND p.id = (SELECT max(a.payment_id) FROM payment_allocations a
                  WHERE a.installment_id = m.installment_id)
      AND EXISTS (SELECT FROM installments i
                  WHERE i.id = m.installment_id AND i.status = 'PAID')
    """
)
# Under the chunk's locks: rows whose reference is recorded already are that payment
# again (``duplicate``) or another one (``conflict``), whatever else they would be. The
# same payment: the same amount to the same target (the same installment, or the same
# user for a payment to a user: a payment to a user is not one to an installment of
# theirs), whenever it was paid (``paid_at`` is not compared: a processor's report may
# date it otherwise than the command that recorded it first). A row without an amount (a
# command's "all that is due") has the amount ``_ALL_DUE`` found, or none: then it is
# never the same (``same`` is NULL). With ``:round`` NULL, every row still to be applied,
# against what was recorded before the chunk; with a round, the rows from that round on
# that repeat a reference of the chunk, against what the rounds before recorded (a
# reference taken once is taken for every later row: they are all judged at once). Each
# row refused comes with its round and the payment recorded before.
_RECORDED = Statement(
    """
    WITH judged AS (
        SELECT m.seq, m.round, m.kind = 'reversal' AS reversal, p.id AS recorded_id, p.same
        FROM payment_moves m
        CROSS JOIN LATERAL (
            SELECT id, amount = m.amount AND user_id = m.user_id
                       AND installment_id IS NOT DISTINCT FROM m.installment_id AS same
            FROM payments
            WHERE m.kind <> 'reversal' AND reference = m.reference
            UNION ALL
            SELECT r.id, r.payment_id = (SELECT id FROM payments
                                         WHERE reference = m.original_reference)
                         AND (m.amount IS NULL OR r.amount = m.amount)
            FROM payment_reversals r
            WHERE m.kind = 'reversal' AND r.reference = m.reference
            OFFSET 0  -- a lookup per row (``_APPLY``)
        ) p
        WHERE m.round IS NOT NULL
          AND (CAST(:round AS integer) IS NULL
               OR (m.round >= :round AND m.after_seq IS NOT NULL))
    ), refused AS (
        UPDATE payment_moves m
        SET outcome = CASE WHEN j.same THEN 'duplicate' ELSE 'conflict' END,
            reason = CASE WHEN j.same THEN 'recorded before as '
                                           || CASE WHEN j.reversal THEN 'reversal '
                                                   ELSE 'payment ' END || j.recorded_id
                          ELSE 'reference used before by '
                               || CASE WHEN j.reversal THEN 'reversal ' ELSE 'payment ' END
                               || j.recorded_id || ' for another '
                               || CASE WHEN j.reversal THEN 'reversal' ELSE 'payment' END
                     END,
            round = NULL
        FROM judged j
        WHERE m.seq = j.seq
        RETURNING m.seq, m.line, m.reference, m.outcome, m.reason
    )
    SELECT r.line, r.reference, r.outcome, r.reason, j.round, j.recorded_id, j.reversal
    FROM refused r JOIN judged j ON j.seq = r.seq
    """
)
_LINES = Statement("SELECT seq, line, reference, amount FROM payment_moves WHERE round = :round")

# Rule 12 for a round's reversals (at most one per payer, so they never share an
# installment): each one's payment (by its reference, recorded by now), and the
# allocations it may undo: the payment's and those of the payments that put it back
# after an earlier reversal (``payments.reinstates``), newest first (the newest payment
# first, then the installments in the reverse of the order it paid them), each with what
# is left of it (what it paid less what reversals undid). A reversal without an amount
# (a command's without ``--amount``) is all that is left; one of more than is left (or of
# nothing) is refused whole. Each installment's ``amount_due`` rises by what is undone;
# a PAID one becomes OVERDUE when its due date is before the cutoff of the latest
# standing sweep (``overdue_since``: that sweep's business date), else UPCOMING; its
# owner becomes DEBT_USER, its plan ACTIVE, all audited, in the one statement. Refund
# cuts are never undone: only what payments paid is.
_REVERSE = Statement(
    """
    WITH named AS MATERIALIZED (
        SELECT m.seq, m.line, m.reference, m.amount AS asked, m.note,
               coalesce(m.paid_at, :now) AS reversed_at, m.user_id AS payer, p.id AS payment_id,
               p.user_id, m.original_reference
        FROM payment_moves m
        LEFT JOIN LATERAL (
            SELECT id, user_id FROM payments WHERE reference = m.original_reference OFFSET 0
        ) p ON true
        WHERE m.round = :round AND m.kind = 'reversal'
    ), family AS MATERIALIZED (
        SELECT n.seq, a.payment_id, a.installment_id, a.plan_id, a.status, a.left_paid,
               sum(a.left_paid) OVER (PARTITION BY n.seq) AS left_in_all,
               coalesce(sum(a.left_paid) OVER newest_first, 0) AS left_before
        FROM named n
        CROSS JOIN LATERAL (
            SELECT a.payment_id, a.installment_id, i.plan_id, i.status, i.due_date,
                   i.sequence,
                   a.amount - coalesce((
                       SELECT sum(x.amount) FROM reversal_allocations x
                       WHERE x.payment_id = a.payment_id
                         AND x.installment_id = a.installment_id), 0) AS left_paid
            FROM (SELECT n.payment_id AS id
                  UNION ALL
                  SELECT id FROM payments WHERE reinstates = n.payment_id) f
            JOIN payment_allocations a ON a.payment_id = f.id
            JOIN installments i ON i.id = a.installment_id
            OFFSET 0
        ) a
        WHERE n.user_id = n.payer
        WINDOW newest_first AS (
            PARTITION BY n.seq
            ORDER BY a.payment_id DESC, a.due_date DESC, a.plan_id DESC, a.sequence DESC
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), totals AS MATERIALIZED (
        SELECT seq, max(left_in_all) AS left_in_all FROM family GROUP BY seq
    ), fitting AS MATERIALIZED (
        SELECT n.seq, n.reference, n.note, n.reversed_at, n.payment_id, n.user_id,
               coalesce(n.asked, t.left_in_all) AS amount,
               nextval(pg_get_serial_sequence('payment_reversals', 'id')) AS reversal_id
        FROM named n
        JOIN totals t ON t.seq = n.seq
        WHERE coalesce(n.asked, t.left_in_all) > 0
          AND coalesce(n.asked, t.left_in_all) <= t.left_in_all
    ), shares AS MATERIALIZED (
        SELECT f.reversal_id, f.user_id, a.payment_id, a.installment_id, a.plan_id, a.status,
               least(a.left_paid, f.amount - a.left_before) AS share
        FROM fitting f
        JOIN family a ON a.seq = f.seq
        WHERE a.left_paid > 0 AND f.amount > a.left_before
    ), per_installment AS MATERIALIZED (
        SELECT installment_id, min(plan_id) AS plan_id, min(user_id) AS user_id,
               min(status) AS was, sum(share) AS share, min(reversal_id) AS reversal_id
        FROM shares
        GROUP BY installment_id
    ), standing AS (
        SELECT id, business_date,
               coalesce(cutoff, business_date - CAST(:grace_days AS integer)) AS cutoff
        FROM sweep_runs
        WHERE outcome = 'SUCCEEDED' AND NOT dry_run
        ORDER BY business_date DESC, id DESC
        LIMIT 1
    ), recorded AS (
        INSERT INTO payment_reversals (id, reference, payment_id, user_id, amount, reason,
                                       source, reversed_at, actor)
        SELECT reversal_id, reference, payment_id, user_id, amount, note, :source,
               reversed_at, :actor
        FROM fitting
    ), undone AS (
        INSERT INTO reversal_allocations (payment_id, installment_id, reversal_id, user_id,
                                          amount)
        SELECT payment_id, installment_id, reversal_id, user_id, share FROM shares
    ), reopened AS (
        UPDATE installments i
        SET amount_due = i.amount_due + s.share,
            status = CASE WHEN i.status <> 'PAID' THEN i.status
                          WHEN i.due_date < w.cutoff THEN 'OVERDUE'
                          ELSE 'UPCOMING' END,
            paid_at = NULL,
            overdue_since = CASE WHEN i.status = 'PAID' AND i.due_date < w.cutoff
                                 THEN w.business_date ELSE i.overdue_since END,
            overdue_run_id = CASE WHEN i.status = 'PAID' AND i.due_date < w.cutoff
                                  THEN w.id ELSE i.overdue_run_id END
        FROM per_installment s
        LEFT JOIN standing w ON true
        WHERE i.id = s.installment_id
        RETURNING i.id, i.user_id, i.status
    ), plans_reopened AS (
        UPDATE plans p SET status = 'ACTIVE', updated_at = :now
        WHERE p.id IN (SELECT plan_id FROM per_installment WHERE was = 'PAID')
          AND p.status = 'COMPLETED'
        RETURNING p.id, p.user_id
    ), debtors AS (
        UPDATE users u SET status = 'DEBT_USER', updated_at = :now
        WHERE u.user_id IN (SELECT user_id FROM reopened WHERE status = 'OVERDUE')
          AND u.status = 'NORMAL'
        RETURNING u.user_id
    ), status_changes AS (
        SELECT d.user_id, 'NORMAL' AS from_status, 'DEBT_USER' AS to_status,
               jsonb_build_object('reversal_id', min(s.reversal_id)) AS details
        FROM debtors d
        JOIN per_installment s ON s.user_id = d.user_id
        GROUP BY d.user_id
    ), audited_users AS ("""  # noqa: S608 - fixed fragments, no input
    + USER_STATUS_CHANGED
    + """), audited AS ("""
    + insert_events(
        """
        SELECT :now, :actor, 'payment.reversed', 'payment', payment_id::text, user_id,
               jsonb_build_object('reversal_id', reversal_id, 'reference', reference,
                                  'amount', amount::text, 'source', :source)
               || jsonb_strip_nulls(jsonb_build_object('reason', note))
        FROM fitting
        UNION ALL
        SELECT :now, :actor, 'installment.reopened', 'installment', r.id::text, r.user_id,
               jsonb_build_object('plan_id', s.plan_id, 'amount', s.share::text,
                                  'was', s.was, 'now', r.status,
                                  'reversal_id', s.reversal_id)
        FROM reopened r
        JOIN per_installment s ON s.installment_id = r.id
        UNION ALL
        SELECT :now, :actor, 'plan.reopened', 'plan', id::text, user_id, '{}'::jsonb
        FROM plans_reopened"""
    )
    + """
    )
    SELECT n.seq, n.line, n.reference, n.original_reference, f.reversal_id, n.payment_id,
           n.user_id IS NOT DISTINCT FROM n.payer AS same_payer, t.left_in_all,
           coalesce(n.asked, t.left_in_all) AS amount
    FROM named n
    LEFT JOIN totals t ON t.seq = n.seq
    LEFT JOIN fitting f ON f.seq = n.seq
    """
)


@dataclass(frozen=True)
class NotApplied:
    """A row of a chunk that was not applied, and why. A command renders it from
    ``earlier`` (``duplicate``, ``conflict``: the payment, or the reversal, recorded
    before with the reference) and ``due`` (``overpayment``: what was due where it went,
    0.00 for an installment already PAID; ``over_reversal``: what was left of the
    payment)."""

    line: int
    reference: str  # blank: a command's payment without one
    outcome: str
    reason: str
    earlier: int | None = None
    due: Decimal | None = None


@dataclass(frozen=True)
class StagedPayments:
    """A chunk staged in ``payment_moves`` (``stage_chunk``): its number of rounds, the
    rows refused already, the payments (and reinstating rows) and the reversals of each
    round, the rounds holding a row that repeats a reference of the chunk or a
    reinstating row, whether it holds a payment of all that is due with a reference
    (``_ALL_DUE``), and how many rows wait for their payment (``_RESOLVE``)."""

    rounds: int
    refused: list[NotApplied]
    sizes: dict[int, int]
    repeat_rounds: frozenset[int] = frozenset()
    all_due: bool = False
    reversals: dict[int, int] = field(default_factory=dict)
    reinstating_rounds: frozenset[int] = frozenset()
    deferred: int = 0


def copy_data(rows: Iterable[Sequence[object]]) -> str:
    """Payments as ``stage_rows`` takes them: CSV of ``PAYMENT_ROW_COLUMNS`` (None: NULL)."""
    import csv

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def stage_rows(executor: Executor, rows_csv: str) -> StagedPayments:
    """Stage a chunk of payments, every channel alike: the rows (CSV of
    ``PAYMENT_ROW_COLUMNS``, a file's chunk as parsed or ``copy_data``'s) COPYed into
    ``payment_rows`` in the chunk's transaction, which looks rows up by index only
    (``tuning.INDEX_LOOKUPS_ONLY``), then classified (``stage_chunk``)."""
    from bnplctl.db import dbapi_connection
    from bnplctl.tuning import INDEX_LOOKUPS_ONLY

    run(executor, CHUNK_TABLES + INDEX_LOOKUPS_ONLY)
    if not rows_csv:
        return StagedPayments(0, [], {})
    with dbapi_connection(executor).cursor() as cursor:
        cursor.copy_expert(
            f"COPY payment_rows ({', '.join(PAYMENT_ROW_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            io.StringIO(rows_csv),
            size=1 << 20,
        )
    return stage_chunk(executor)


_PAYERS = Statement("SELECT DISTINCT user_id FROM payment_moves WHERE round IS NOT NULL")


def staged_payers(executor: Executor) -> list[str]:
    """Whose payments the staged chunk holds (a command locks them: ``locks``)."""
    return [str(user_id) for user_id in run(executor, _PAYERS).scalars()]


def stage_chunk(executor: Executor) -> StagedPayments:
    """Classify the chunk in ``payment_rows`` as far as no lock is needed and put its rows
    in rounds (``_PREPARE``; ``place_in_rounds``)."""
    return place_in_rounds(executor, _PREPARE)


def place_in_rounds(executor: Executor, statement: Statement) -> StagedPayments:
    """``statement`` (``_PREPARE``, or ``_ROUNDS`` again), then rows that repeat another
    payer's reference of the chunk in rounds after the row they repeat
    (``services/rounds.py``)."""
    from collections import Counter

    from bnplctl.services.rounds import put_in_rounds

    rows = run(executor, statement).all()
    summary = next(row for row in rows if row.line is None)
    refused = _refused(row for row in rows if row.line is not None)
    repeat_rounds = frozenset(summary.repeat_rounds)
    payments, reversals = Counter(summary.payments), Counter(summary.reversals)
    reinstating = frozenset(summary.reinstating)
    if summary.crossing:  # a payer's own rounds put its repeats after the first already
        rows, placed = put_in_rounds(
            executor,
            _TO_ORDER,
            _SET_ROUNDS,
            lambda row: (
                (("payer", row.user_id), 1),
                (("reference", row.kind == "reversal", row.reference), 1),
            ),
        )
        payments = Counter(placed[row.seq] for row in rows if row.kind != "reversal")
        reversals = Counter(placed[row.seq] for row in rows if row.kind == "reversal")
        repeat_rounds = frozenset(placed[row.seq] for row in rows if row.repeats)
        reinstating = frozenset(placed[row.seq] for row in rows if row.kind == "reinstating")
    return StagedPayments(
        max([*payments, *reversals], default=0),
        refused,
        dict(payments),
        repeat_rounds,
        bool(summary.all_due),
        dict(reversals),
        reinstating,
        int(summary.deferred),
    )


@dataclass(frozen=True)
class AppliedChunk:
    """What ``apply_chunk`` did: the payments recorded (in the order of the rows), the
    reversals recorded (by line), the rows not applied (in line order), and what rule 4
    then settled."""

    payment_ids: list[int]
    not_applied: list[NotApplied]
    settled: Settled
    reversal_ids: dict[int, int] = field(default_factory=dict)

    @property
    def reversed(self) -> list[int]:
        """The lines of the reversals recorded (outcome ``reversed``)."""
        return sorted(self.reversal_ids)


def _refused(rows: Iterable[Any]) -> list[NotApplied]:
    return [NotApplied(int(row.line), row.reference or "", row.outcome, row.reason) for row in rows]


def apply_chunk(
    executor: Executor,
    *,
    staged: StagedPayments,
    source: str,
    now: datetime,
    actor: str,
    grace_days: int | None = None,
) -> AppliedChunk:
    """Rules 10 and 12 for a chunk staged by ``stage_rows``: the rows whose payment was
    not yet known when staged (``_RESOLVE``, then rounds again), the references recorded
    before (what a payment of all that is due asked for first, ``_ALL_DUE``), then a
    round at a time (a round's repeated references judged first, its reinstating rows'
    payments found): its payments, then its reversals; then rule 4 for what the
    payments paid off. The rows not applied include those refused at staging.
    ``grace_days`` (the settings'): the cutoff of a sweep recorded without one, for a
    chunk that may hold reversals. The caller holds the chunk's locks."""
    from bnplctl.services.settlement import settle

    refused = list(staged.refused)
    if staged.deferred:
        refused += _refused(run(executor, _RESOLVE))
        staged = place_in_rounds(executor, _ROUNDS)
    sizes, reversals = dict(staged.sizes), dict(staged.reversals)

    def judge(round_number: int | None) -> None:
        for row, its_round, reversal in _recorded(executor, round_number):
            refused.append(row)
            (reversals if reversal else sizes)[its_round] -= 1

    if staged.all_due:
        run(executor, _ALL_DUE)
    judge(None)
    recorded: dict[int, int] = {}
    reversal_ids: dict[int, int] = {}
    plans: set[int] = set()
    owners: set[str] = set()
    for round_number in range(1, staged.rounds + 1):
        if round_number in staged.repeat_rounds:
            judge(round_number)
        if sizes.get(round_number) and round_number in staged.reinstating_rounds:
            unknown = _refused(run(executor, _ORIGINALS, {"round": round_number}))
            refused += unknown
            sizes[round_number] -= len(unknown)
        if sizes.get(round_number):
            result = _apply(
                executor, round_number=round_number, source=source, now=now, actor=actor
            )
            recorded.update(result.payment_ids)
            plans.update(result.plans_paid_off)
            owners.update(result.overdue_owners)
            refused += _overpaid(executor, round_number, result.overpaid)
        if reversals.get(round_number):
            if grace_days is None:
                raise ValueError("a chunk with reversals needs the grace days")
            done, not_done = _reverse(
                executor,
                round_number=round_number,
                source=source,
                now=now,
                actor=actor,
                grace_days=grace_days,
            )
            reversal_ids.update(done)
            refused += not_done
    settled = settle(executor, plan_ids=plans, user_ids=owners, now=now, actor=actor)
    return AppliedChunk(
        [recorded[seq] for seq in sorted(recorded)],
        sorted(refused, key=lambda item: item.line),
        settled,
        reversal_ids,
    )


def _recorded(executor: Executor, round_number: int | None) -> list[tuple[NotApplied, int, bool]]:
    """``_RECORDED``: each row refused, with its round and whether it is a reversal."""
    return [
        (
            NotApplied(int(row.line), row.reference, row.outcome, row.reason, int(row.recorded_id)),
            int(row.round),
            bool(row.reversal),
        )
        for row in run(executor, _RECORDED, {"round": round_number})
    ]


def _overpaid(
    executor: Executor, round_number: int, overpaid: dict[int, Decimal]
) -> list[NotApplied]:
    if not overpaid:
        return []
    lines = {
        int(row.seq): row
        for row in run(executor, _LINES, {"round": round_number})
        if int(row.seq) in overpaid
    }
    refused = []
    for seq, due in overpaid.items():
        row = lines[seq]
        offered = "nothing" if row.amount is None else format_amount(row.amount)
        refused.append(
            NotApplied(
                int(row.line),
                row.reference or "",
                "overpayment",
                f"amount {offered} is more than the {format_amount(due)} still due where it goes",
                due=due,
            )
        )
    return refused


def _reverse(
    executor: Executor,
    *,
    round_number: int,
    source: str,
    now: datetime,
    actor: str,
    grace_days: int,
) -> tuple[dict[int, int], list[NotApplied]]:
    """``_REVERSE`` for a round: the reversals recorded (line -> id) and those refused."""
    parameters = {
        "round": round_number,
        "source": source,
        "now": now,
        "actor": actor,
        "grace_days": grace_days,
    }
    done: dict[int, int] = {}
    refused: list[NotApplied] = []
    for row in run(executor, _REVERSE, parameters):
        line, reference = int(row.line), row.reference or ""
        if row.reversal_id is not None:
            done[line] = int(row.reversal_id)
        elif row.payment_id is None:
            refused.append(
                NotApplied(
                    line,
                    reference,
                    "unknown_payment",
                    f"no payment with reference {row.original_reference}",
                )
            )
        elif not row.same_payer:  # recorded by another writer since the row was staged
            refused.append(
                NotApplied(
                    line,
                    reference,
                    "conflict",
                    f"payment {row.original_reference} is another payer's than the chunk's"
                    " row with its reference",
                    int(row.payment_id),
                )
            )
        else:
            left = Decimal(row.left_in_all or 0)
            asked = "all that is left" if row.amount is None else format_amount(row.amount)
            refused.append(
                NotApplied(
                    line,
                    reference,
                    "over_reversal",
                    f"{asked} is more than the {format_amount(left)} left of payment"
                    f" {row.original_reference}"
                    if left
                    else f"nothing is left of payment {row.original_reference} to reverse",
                    int(row.payment_id),
                    due=left,
                )
            )
    return done, refused


# --- reading payments --------------------------------------------------------------------

PAYMENT_FIELDS = ("id", "reference", "user_id", "amount", "paid_at", "source")

_ALLOCATIONS = Statement(
    """
    SELECT payment_id, installment_id, amount FROM payment_allocations
    WHERE payment_id = ANY(:ids)
    ORDER BY payment_id, installment_id
    """
)


# The reversals that took something back of each payment, with how much of it: a
# reversal of a payment reinstated (rule 12) may take back what the reinstating payment
# paid; it is listed under the payment whose allocations it undid.
_REVERSALS = Statement(
    """
    SELECT x.payment_id, r.id, r.reference, sum(x.amount) AS amount, r.reason, r.reversed_at
    FROM reversal_allocations x
    JOIN payment_reversals r ON r.id = x.reversal_id
    WHERE x.payment_id = ANY(:ids)
    GROUP BY x.payment_id, r.id
    ORDER BY x.payment_id, r.id
    """
)


def public_payments(executor: Executor, rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Payments (rows with ``PAYMENT_FIELDS``) as the JSON output shows them, each with
    its allocations, what reversals took back of it (``reversed``: rule 12) and those
    reversals, each with what it took back of this payment."""
    rows = list(rows)
    allocations: dict[int, list[dict[str, Any]]] = {int(row.id): [] for row in rows}
    reversals: dict[int, list[dict[str, Any]]] = {int(row.id): [] for row in rows}
    reversed_: dict[int, Decimal] = {}
    if rows:
        ids = {"ids": list(allocations)}
        for allocation in run(executor, _ALLOCATIONS, ids):
            allocations[int(allocation.payment_id)].append(
                {
                    "installment_id": int(allocation.installment_id),
                    "amount": format_amount(allocation.amount),
                }
            )
        for reversal in run(executor, _REVERSALS, ids):
            payment_id = int(reversal.payment_id)
            reversals[payment_id].append(
                {
                    "id": int(reversal.id),
                    "reference": reversal.reference,
                    "amount": format_amount(reversal.amount),
                    "reason": reversal.reason,
                    "reversed_at": reversal.reversed_at.isoformat(),
                }
            )
            reversed_[payment_id] = reversed_.get(payment_id, Decimal(0)) + reversal.amount
    return [
        {
            "id": int(row.id),
            "reference": row.reference,
            "user_id": row.user_id,
            "amount": format_amount(row.amount),
            "reversed": format_amount(reversed_.get(int(row.id), Decimal(0))),
            "paid_at": row.paid_at.isoformat(),
            "source": row.source,
            "allocations": allocations[int(row.id)],
            "reversals": reversals[int(row.id)],
        }
        for row in rows
    ]


def list_payments(
    session: Session,
    *,
    user_id: str | None = None,
    since: datetime | None = None,
    request: ListRequest | None = None,
) -> Page[Payment]:
    """Newest first unless sorted (``request``: all, by default), fetched in batches."""
    from sqlmodel import col, select

    from bnplctl.models import Payment
    from bnplctl.services.listing import ListRequest, ordering, page
    from bnplctl.sorting import PAYMENT_SORT

    request = request if request is not None else ListRequest()
    query = select(Payment)
    if user_id is not None:
        query = query.where(Payment.user_id == user_id)
    if since is not None:
        query = query.where(col(Payment.paid_at) >= since)
    fields = {name: col(getattr(Payment, name)) for name in PAYMENT_SORT}
    newest = [col(Payment.paid_at).desc(), col(Payment.id).desc()]
    order = ordering(request.sort, fields, newest, col(Payment.id))
    return page(session, query.order_by(*order), request)


def iter_public_payments(session: Session, payments: Iterable[Payment]) -> Iterator[dict[str, Any]]:
    """``public_payments`` a batch at a time: flat memory for any number of payments."""
    from bnplctl.services.listing import in_batches

    return in_batches(payments, lambda batch: public_payments(session, batch))


_BY_REFERENCE = Statement("SELECT id FROM payments WHERE reference = :reference")


def payment_with_reference(executor: Executor, reference: str) -> int | None:
    """The id of the payment recorded with ``reference``, if any: whether a payment was
    made (the demo's, made once). Whether a payment is that one again is rule 10's
    question, which only ``_RECORDED`` answers."""
    found = run(executor, _BY_REFERENCE, {"reference": reference}).scalar()
    return None if found is None else int(found)


def payments_by_id(executor: Executor, payment_ids: Iterable[int]) -> list[dict[str, Any]]:
    rows = run(
        executor,
        f"SELECT {', '.join(PAYMENT_FIELDS)} FROM payments"  # noqa: S608 - constants
        " WHERE id = ANY(:ids) ORDER BY id",
        {"ids": sorted(set(payment_ids))},
    ).all()
    return public_payments(executor, rows)


_REVERSAL = Statement(
    """
    SELECT r.id, r.reference, p.reference AS payment_reference, r.payment_id, r.user_id,
           r.amount, r.reason, r.source, r.reversed_at
    FROM payment_reversals r
    JOIN payments p ON p.id = r.payment_id
    WHERE r.id = :id
    """
)
_UNDONE = Statement(
    """
    SELECT x.payment_id, x.installment_id, x.amount, i.status, i.amount_due
    FROM reversal_allocations x
    JOIN installments i ON i.id = x.installment_id
    WHERE x.reversal_id = :id
    ORDER BY x.installment_id
    """
)


def reversal_by_id(executor: Executor, reversal_id: int) -> dict[str, Any]:
    """A reversal as the JSON output shows it: what it undid of each installment, and
    where each installment stands now."""
    row = run(executor, _REVERSAL, {"id": reversal_id}).one()
    return {
        "id": int(row.id),
        "reference": row.reference,
        "payment_reference": row.payment_reference,
        "payment_id": int(row.payment_id),
        "user_id": row.user_id,
        "amount": format_amount(row.amount),
        "reason": row.reason,
        "source": row.source,
        "reversed_at": row.reversed_at.isoformat(),
        "undone": [
            {
                "payment_id": int(undone.payment_id),
                "installment_id": int(undone.installment_id),
                "amount": format_amount(undone.amount),
                "status": undone.status,
                "amount_due": format_amount(undone.amount_due),
            }
            for undone in run(executor, _UNDONE, {"id": reversal_id})
        ],
    }


_STAGED_INPUT = Statement(
    """
    SELECT line, reference, amount, user_id, installment_id, paid_at, kind,
           original_reference, note
    FROM payment_rows
    WHERE line = ANY(:lines)
    ORDER BY line
    """
)


def staged_input(executor: Executor, lines: Sequence[int]) -> list[tuple[object, ...]]:
    """The rows of the chunk being applied at ``lines`` as they were staged (COPY
    columns after ``seq``), to stage again later (a file's reversals put off until its
    last chunk: ``importing/payments.py``)."""
    return [
        (
            row.line,
            row.reference,
            row.amount,
            row.user_id,
            row.installment_id,
            row.paid_at.isoformat() if row.paid_at is not None else None,
            row.kind,
            row.original_reference,
            row.note,
        )
        for row in run(executor, _STAGED_INPUT, {"lines": list(lines)})
    ]
