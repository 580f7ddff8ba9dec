"""Rule 7 (``services/refund_application.py``) against a model of it in Python: whatever
the plans, their installments and the approvals of one statement, each approved refund
takes its plan's unpaid balance from the last installment back, in file order (a
command's approvals: in refund id order)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.services import refund_application, refund_states

CENT = Decimal("0.01")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

amounts = st.integers(min_value=1, max_value=20_000).map(lambda cents: Decimal(cents) * CENT)
# A plan: each installment's original amount, and how much of it is still due (a fraction
# in tenths: 0 is PAID, 10 untouched).
plans = st.lists(
    st.lists(st.tuples(amounts, st.integers(min_value=0, max_value=10)), min_size=1, max_size=5),
    min_size=1,
    max_size=4,
)
# An approval: which plan (None: a refund without a plan) and its amount.
approvals = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(min_value=0, max_value=3)), amounts),
    min_size=1,
    max_size=6,
)


def _model(
    installments: dict[int, list[list[Any]]],
    approved: list[tuple[int, int, int | None, Decimal]],
) -> tuple[dict[int, Decimal], dict[int, tuple[Decimal, str]]]:
    """Each refund's applied amount, each installment's (amount_due, status); the
    approvals are (place, refund id, plan, amount), taken in place order."""
    applied: dict[int, Decimal] = {}
    for _, refund_id, plan, amount in sorted(approved):
        left = amount
        for installment in reversed(installments.get(plan, []) if plan is not None else []):
            cut = min(installment[1], left)
            installment[1] -= cut
            left -= cut
        applied[refund_id] = amount - left
    states = {
        row[0]: (row[1], "PAID" if row[1] == 0 else row[2])
        for rows in installments.values()
        for row in rows
    }
    return applied, states


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plans=plans, approvals=approvals, from_a_file=st.booleans(), data=st.data())
def test_rule7_matches_its_model(
    engine: Engine,
    plans: list[list[tuple[Decimal, int]]],
    approvals: list[tuple[int | None, Decimal]],
    from_a_file: bool,
    data: st.DataObject,
) -> None:
    """A file's approvals (each with its place in the chunk) are taken in file order,
    whatever their refund ids; a command's (place 0) in refund id order."""
    places = data.draw(st.permutations(range(1, len(approvals) + 1))) if from_a_file else None
    with engine.connect() as connection, connection.begin():
        connection.execute(
            text(
                "INSERT INTO users (user_id, full_name, phone_e164, passport_ciphertext,"
                " passport_blind_index, passport_masked, card_brand, card_first6, card_last4,"
                " card_fingerprint, date_of_birth) VALUES ('r7', 'Rule Seven', '+998901234567',"
                " '\\x00', 'idx-r7', 'AA****', 'visa', '411111', '1111', 'fp', '1990-01-01')"
            )
        )
        installments: dict[int, list[list[Any]]] = {}
        plan_ids = []
        for plan in plans:
            total = sum((original for original, _ in plan), Decimal(0))
            plan_id = connection.execute(
                text(
                    "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
                    " VALUES ('r7', :total, :count, '2026-01-01') RETURNING id"
                ),
                {"total": total, "count": len(plan)},
            ).scalar_one()
            plan_ids.append(plan_id)
            installments[plan_id] = []
            for sequence, (original, tenths) in enumerate(plan, start=1):
                due = (original * tenths / 10).quantize(CENT)
                status = "PAID" if due == 0 else ("OVERDUE" if sequence == 1 else "UPCOMING")
                installment_id = connection.execute(
                    text(
                        "INSERT INTO installments (plan_id, user_id, sequence, original_amount,"
                        " amount_due, due_date, status, paid_at, overdue_since)"
                        " VALUES (:plan, 'r7', :sequence, :original, :due,"
                        " DATE '2026-01-01' + 30 * :sequence, :status,"
                        " CASE WHEN :status = 'PAID' THEN CAST(:now AS timestamptz) END,"
                        " CASE WHEN :status = 'OVERDUE' THEN CAST(:now AS timestamptz) END)"
                        " RETURNING id"
                    ),
                    {"plan": plan_id, "sequence": sequence, "original": original, "due": due,
                     "status": status, "now": NOW},
                ).scalar_one()  # fmt: skip
                installments[plan_id].append([installment_id, due, status])
        refund_states.create_work_tables(connection)
        approved = []
        for number, (plan_index, amount) in enumerate(approvals):
            plan_id = plan_ids[plan_index % len(plan_ids)] if plan_index is not None else None
            refund_id = connection.execute(
                text(
                    "INSERT INTO refunds (user_id, plan_id, transaction_id, amount)"
                    " VALUES ('r7', :plan, :ref, :amount) RETURNING id"
                ),
                {"plan": plan_id, "ref": f"R7-{number}", "amount": amount},
            ).scalar_one()
            place = places[number] if places is not None else None
            connection.execute(
                text(
                    "INSERT INTO refunds_approved (seq, refund_id, user_id, plan_id, amount)"
                    " VALUES (:seq, :id, 'r7', :plan, :amount)"
                ),
                {"seq": place or 0, "id": refund_id, "plan": plan_id, "amount": amount},
            )
            approved.append((place if place is not None else refund_id, refund_id, plan_id, amount))

        refund_application.apply_approved(
            connection, source="test", file_id=None, now=NOW, actor="t"
        )

        applied, states = _model(installments, approved)
        refunds = {
            row.id: (row.status, row.applied_amount, row.payout_amount)
            for row in connection.execute(
                text("SELECT id, status, applied_amount, payout_amount FROM refunds")
            )
        }
        assert refunds == {
            refund_id: ("COMPLETED", applied[refund_id], amount - applied[refund_id])
            for _, refund_id, _, amount in approved
        }
        stored = {
            row.id: (row.amount_due, row.status)
            for row in connection.execute(text("SELECT id, amount_due, status FROM installments"))
        }
        assert stored == states
        audited = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'refund.status_changed'")
        ).scalar_one()
        assert audited == len(approved)
        connection.rollback()
