"""Demo data beyond the sample users: plans, one of them long past due. Safe to repeat."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlmodel import Session

from bnplctl.money import add_months
from bnplctl.services.installments import pay
from bnplctl.services.plans import create_plan, find_by_reference

# (user, merchant reference, total, installments, months before today it started, paid)
DEMO_PLANS = (
    ("usr-001", "DEMO-LATE", Decimal("500.00"), 3, 4, 0),
    ("usr-002", "DEMO-NEW", Decimal("1200.00"), 6, 0, 0),
    ("usr-003", "DEMO-PAID", Decimal("90.00"), 3, 2, 3),
)


def seed_plans(session: Session, today: date, *, actor: str) -> list[int]:
    """Create the demo plans that do not exist yet; returns the new plan ids."""
    created: list[int] = []
    for user_id, reference, total, count, months_ago, paid in DEMO_PLANS:
        if find_by_reference(session, user_id, reference) is not None:
            continue
        plan = create_plan(
            session,
            user_id=user_id,
            total=total,
            count=count,
            start=add_months(today, -months_ago),
            merchant_reference=reference,
            actor=actor,
        )
        assert plan.id is not None  # noqa: S101 - flushed
        if paid:
            from sqlmodel import col, select

            from bnplctl.models import Installment

            ids = session.exec(
                select(Installment.id)
                .where(Installment.plan_id == plan.id)
                .order_by(col(Installment.sequence))
                .limit(paid)
            ).all()
            pay(session, [int(i) for i in ids if i is not None], actor=actor)
        created.append(plan.id)
    return created


# (transaction id = the sample webhook file's refund_id, user, amount, plan reference)
DEMO_REFUNDS = (
    ("REF-001", "usr-001", Decimal("75.50"), "DEMO-LATE"),
    ("REF-002", "usr-002", Decimal("20.00"), None),
    ("REF-003", "usr-003", Decimal("15.00"), None),
)


def seed_refunds(session: Session, *, actor: str) -> int:
    """Create the demo refunds the sample webhook file refers to; returns how many are new."""
    from bnplctl.services.refunds import create_refund

    created = 0
    for transaction_id, user_id, amount, plan_reference in DEMO_REFUNDS:
        plan = find_by_reference(session, user_id, plan_reference) if plan_reference else None
        _, existed = create_refund(
            session,
            user_id=user_id,
            transaction_id=transaction_id,
            amount=amount,
            plan_id=plan.id if plan else None,
            reason="demo",
            actor=actor,
        )
        created += not existed
    return created


def already_ingested(session: Session, kind: str, sha256: str) -> bool:
    """Whether a file of this kind (``statuses.FileKind``) and content was loaded to
    its end before."""
    from sqlalchemy import text

    found = session.execute(
        text(
            "SELECT 1 FROM ingested_files"
            " WHERE kind = :kind AND sha256 = :sha256 AND finished_at IS NOT NULL"
        ),
        {"kind": kind, "sha256": sha256},
    ).first()
    return found is not None
