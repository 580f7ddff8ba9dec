"""The statuses of users, plans, installments, refunds and sweep runs: one list each.

The models' columns and the commands' ``--status`` choices are these enums, so the two
cannot drift. Nothing else is imported here: ``--help`` loads this module.
"""

from __future__ import annotations

from enum import StrEnum


class UserStatus(StrEnum):
    NORMAL = "NORMAL"
    DEBT_USER = "DEBT_USER"


class PlanStatus(StrEnum):
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"


class InstallmentStatus(StrEnum):
    UPCOMING = "UPCOMING"
    OVERDUE = "OVERDUE"
    PAID = "PAID"


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"


class SweepOutcome(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERTED = "REVERTED"  # rule 11: a successful run undone by ``debt sweep --revert``
