"""The statuses of users, plans, installments, refunds and sweep runs, and the kinds of
batch files: one list each.

The models' columns (their checks) and the commands' ``--status`` choices are these
enums, so the two cannot drift; ``tests/test_options.py`` holds the choices to them and
``tests/test_database.py`` the database's checks. Nothing else is imported here:
``--help`` loads this module.
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


class FileKind(StrEnum):
    """What a batch file recorded in ``ingested_files`` held (``importing/ledger.py``)."""

    WEBHOOKS = "webhooks"  # merchant refund-status updates: ``webhooks ingest``
    PAYMENTS = "payments"  # the processor's settlement files: ``payments import``
