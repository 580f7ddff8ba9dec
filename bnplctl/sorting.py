"""The fields each list can be sorted by (``--sort``): one home for the CLI's help and
the services' ORDER BY. Plain data: the CLI imports it when it builds a command."""

USER_SORT = ("user_id", "full_name", "status", "date_of_birth", "created_at")
PLAN_SORT = ("id", "user_id", "total_amount", "status", "start_date", "created_at")
INSTALLMENT_SORT = (
    "id", "plan_id", "user_id", "sequence", "amount_due", "due_date", "status", "paid_at"
)  # fmt: skip
REFUND_SORT = (
    "id", "transaction_id", "user_id", "plan_id", "amount", "status", "processed_at", "created_at"
)  # fmt: skip
AUDIT_SORT = ("id", "occurred_at", "actor", "action", "entity", "entity_id")
PAYMENT_SORT = ("id", "reference", "user_id", "amount", "paid_at", "source")
