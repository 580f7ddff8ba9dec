"""Rule 10 through its two channels (issue 25): the same payment offered through
``installments pay`` and through a one-row ``payments import`` file gets the same answer,
because both stage it and run the same statements (``services/payments.py``).

Each case records what it needs first, through either channel, then offers one payment
twice, each time on a fresh copy of that state: once as a command, once as a file's row.
Both must give the case's outcome (the file's outcome names; a command renders them as
exit codes and messages) and leave the same installments and payments. A command without
``--amount`` asks for all that is due, which a row cannot say: its row carries what was
due, and where that is not the same request the case says what each channel answers.
(These answers held when the command decided rule 10 in Python too; now one set of
statements gives them, and ``tests/test_layout.py`` keeps it so.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import TABLES, Cli
from tests.test_concurrency import Worker
from tests.test_sweep import seed

State = dict[str, list[tuple[Any, ...]]]

HEADER = "reference,amount,user_id,installment_id,paid_at\n"
OUTCOMES = ("applied", "duplicate", "conflict", "unknown_installment", "overpayment")
# How a command shows each outcome: its exit code and what its stderr says (nothing due
# where it goes: the installment is PAID, or less is due than offered).
COMMAND_SHOWS = {
    "duplicate": (0, "recorded before; returning it, nothing written"),
    "applied": (0, "recorded"),
    "conflict": (3, "was already used for another payment"),
    "unknown_installment": (4, "not found"),
    "overpayment": (3, "error: overpayment: "),
    "nothing due": (3, "is already PAID"),
}


@dataclass(frozen=True)
class Payment:
    """One payment as both channels take it. ``amount`` None: a command without
    ``--amount`` (all that is due), which a file row cannot say: the row then carries
    ``file_amount``, what the processor would report (what was due); with ``file_amount``
    None too, the case has no file row to compare and runs through the command only."""

    reference: str | None
    amount: str | None
    installment: int | None = None
    user: str | None = None  # a file row's user_id (a command names installments only)
    paid_at: str = ""  # a file row's paid_at (a command's payment is dated when it runs)
    file_amount: str | None = None

    def command(self) -> list[str]:
        assert self.installment is not None
        args = ["installments", "pay", str(self.installment)]
        if self.amount is not None:
            args += ["--amount", self.amount]
        if self.reference is not None:
            args += ["--reference", self.reference]
        return args

    def row(self) -> str | None:
        amount = self.amount if self.amount is not None else self.file_amount
        if amount is None or self.reference is None:
            return None
        installment = "" if self.installment is None else str(self.installment)
        return f"{self.reference},{amount},{self.user or ''},{installment},{self.paid_at}\n"


@dataclass(frozen=True)
class Case:
    name: str
    probe: Payment
    outcome: str
    before: list[tuple[str, Payment]] = field(default_factory=list)  # ("command"|"file", …)
    message: str | None = None  # what the command says besides COMMAND_SHOWS
    file_outcome: str | None = None  # when a file's row is not the command's request


def _command(reference: str | None, amount: str | None, installment: int) -> tuple[str, Payment]:
    return "command", Payment(reference, amount, installment)


def _row(reference: str, amount: str, **where: Any) -> tuple[str, Payment]:
    return "file", Payment(reference, amount, **where)


# u-1 owes installments 1, 2 and 3 (100.00 each, due in that order); u-2 owes 4, 5 and 6.
CASES = [
    Case("a new reference", Payment("R", "25.00", 1), "applied"),
    Case("the same payment again", Payment("R", "25.00", 1), "duplicate",
         [_command("R", "25.00", 1)]),
    Case("the same payment, another paid_at", Payment("R", "25.00", 1,
         paid_at="2026-01-06T09:00:00Z"), "duplicate",
         [_row("R", "25.00", installment=1, paid_at="2026-01-05T09:00:00Z")]),
    Case("the same payment that paid the installment off", Payment("R", "100.00", 1),
         "duplicate", [_command("R", "100.00", 1)]),
    Case("the same payment, the user named too", Payment("R", "25.00", 1, user="u-1"),
         "duplicate", [_command("R", "25.00", 1)]),
    Case("another amount", Payment("R", "26.00", 1), "conflict", [_command("R", "25.00", 1)],
         "payment reference R was already used for another payment (payment 1);"
         " nothing was paid"),
    Case("another installment", Payment("R", "25.00", 2), "conflict",
         [_command("R", "25.00", 1)]),
    Case("another user's installment", Payment("R", "25.00", 4), "conflict",
         [_command("R", "25.00", 1)]),
    Case("paid to the user before, now to its installment", Payment("R", "100.00", 1),
         "conflict", [_row("R", "100.00", user="u-1")]),
    Case("all that is due, again after it paid the installment off",
         Payment("R", None, 1, file_amount="100.00"), "duplicate", [_command("R", None, 1)]),
    Case("all that is due, the reference the file's payment in full",
         Payment("R", None, 1, file_amount="100.00"), "duplicate",
         [_row("R", "100.00", installment=1)]),
    Case("all that is due, the reference a part payment",
         Payment("R", None, 1, file_amount="60.00"), "conflict", [_command("R", "40.00", 1)]),
    # Not the same request: without --amount a command asks to pay the installment off,
    # which the part payment R was not; the file's row repeats R as it was recorded.
    Case("all that is due, as much as the part payment before",
         Payment("R", None, 1, file_amount="50.00"), "conflict", [_command("R", "50.00", 1)],
         file_outcome="duplicate"),
    Case("all that is due, the reference a part payment, the rest paid since",
         Payment("R", None, 1), "conflict",
         [_command("R", "40.00", 1), _command(None, None, 1)]),
    Case("all that is due, the reference a payment to the user",
         Payment("R", None, 1, file_amount="100.00"), "conflict",
         [_row("R", "100.00", user="u-1")]),
    Case("a new reference, the installment PAID", Payment("N", "10.00", 1), "overpayment",
         [_command(None, None, 1)], "installment 1 is already PAID"),
    Case("all that is due, the installment PAID", Payment("N", None, 1, file_amount="100.00"),
         "overpayment", [_command(None, None, 1)], "installment 1 is already PAID"),
    Case("more than is due", Payment("R", "100.01", 1), "overpayment", [],
         "overpayment: 100.01 is more than the 100.00 due on installment 1; nothing was paid"),
    Case("an unknown installment", Payment("R", "5.00", 999), "unknown_installment"),
    Case("a used reference, an unknown installment", Payment("R", "5.00", 999),
         "unknown_installment", [_command("R", "5.00", 1)]),
    Case("a used reference, the installment PAID", Payment("R", "40.00", 1), "conflict",
         [_command("R", "40.00", 2), _command(None, None, 1)]),
]  # fmt: skip


def _offer(cli: Cli, tmp_path: Path, channel: str, payment: Payment) -> tuple[str, str]:
    """``payment`` through ``channel``: its outcome and what the command said."""
    if channel == "command":
        result = cli(*payment.command())
        found = next(
            name
            for name, (code, said) in COMMAND_SHOWS.items()  # "recorded before" first
            if result.exit_code == code and said in result.stderr
        )
        return found.replace("nothing due", "overpayment"), result.stderr
    source = tmp_path / "one.csv"
    row = payment.row()
    assert row is not None
    source.write_text(HEADER + row)
    result = cli("payments", "import", str(source), "-o", "json")
    assert result.exit_code in (0, 5), result.stderr
    summary = json.loads(result.stdout)
    (outcome,) = [name for name in OUTCOMES if summary[name]]
    return outcome, ""


def _state(engine: Engine) -> State:
    """What a payment leaves, channels apart (``source``; ``paid_at``, now or the row's)."""
    queries = {
        "installments": "SELECT id, amount_due::text, status FROM installments ORDER BY id",
        "users": "SELECT user_id, status FROM users ORDER BY 1",
        "plans": "SELECT id, status FROM plans ORDER BY id",
        "payments": "SELECT p.id, p.reference, p.amount::text, p.user_id, p.installment_id,"
        " a.installment_id, a.amount::text FROM payments p"
        " JOIN payment_allocations a ON a.payment_id = p.id ORDER BY p.id, a.installment_id",
    }
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(text(query))]
            for name, query in queries.items()
        }


def _prepare(cli: Cli, engine: Engine, tmp_path: Path, case: Case) -> State:
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    seed(engine, 2, date(2026, 1, 1))
    for channel, payment in case.before:
        outcome, said = _offer(cli, tmp_path, channel, payment)
        assert outcome == "applied", said
    return _state(engine)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_command_and_a_file_row_get_the_same_answer(
    cli: Cli, engine: Engine, tmp_path: Path, case: Case
) -> None:
    channels = ["command", "file"] if case.probe.row() is not None else ["command"]
    answers: dict[str, tuple[str, State]] = {}
    for channel in channels:
        before = _prepare(cli, engine, tmp_path, case)
        outcome, said = _offer(cli, tmp_path, channel, case.probe)
        after = _state(engine)
        if outcome != "applied":
            assert after == before, f"{channel}: {outcome} wrote something"
        if channel == "command" and case.message is not None:
            assert f"error: {case.message}\n" == said
        answers[channel] = (outcome, after)

    expected = {"command": case.outcome, "file": case.file_outcome or case.outcome}
    assert {channel: outcome for channel, (outcome, _) in answers.items()} == {
        channel: expected[channel] for channel in channels
    }
    if "file" in answers and case.file_outcome is None:
        assert answers["command"][1] == answers["file"][1]


def _pay_by_command(installment: int, amount: str, reference: str) -> str:
    """``installments pay`` through its service in a unit of its own: the outcome."""
    from bnplctl.errors import Refused
    from bnplctl.services.installments import pay
    from tests.helpers import unit

    try:
        with unit() as work:
            paid = pay(
                work.session, [installment], actor="cmd", amount=Decimal(amount),
                reference=reference,
            )  # fmt: skip
    except Refused as refused:
        assert "was already used for another payment" in refused.message
        return "conflict"
    return "duplicate" if paid.get("duplicate") else "applied"


def test_commands_and_a_file_racing_on_the_same_references_record_each_once(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A file and commands offering the same references at once (chunk locks against
    row and reference locks): each reference is recorded once, by whichever came first,
    and every answer agrees with what was recorded."""
    seed(engine, 10, date(2026, 1, 1))
    cli.chunks(payments=3)
    first_of = {user: 3 * user - 2 for user in range(1, 11)}  # u-N's first installment
    wanted = {  # reference -> (installment, the file's amount, the command's amount)
        f"RACE-{n}": (first_of[n % 10 + 1], "10.00", "10.00" if n % 3 else "11.00")
        for n in range(30)
    }
    source = tmp_path / "race.csv"
    source.write_text(
        HEADER + "".join(f"{ref},{amount},,{inst},\n" for ref, (inst, amount, _) in wanted.items())
    )
    commands = Worker(  # from the file's end, so that they meet
        lambda: {
            ref: _pay_by_command(inst, mine, ref)
            for ref, (inst, _, mine) in reversed(list(wanted.items()))
        }
    )
    commands.start()
    result = cli("payments", "import", str(source), "-o", "json")
    commands.join(timeout=120)

    assert commands.error is None, commands.error
    assert result.exit_code in (0, 5), result.stderr
    with engine.connect() as connection:
        recorded = {
            row.reference: (row.amount, row.source)
            for row in connection.execute(
                text("SELECT reference, amount::text AS amount, source FROM payments")
            )
        }
    assert set(recorded) == set(wanted)
    for ref, said in commands.result.items():
        amount, source_of = recorded[ref]
        mine = wanted[ref][2]
        expected = "applied" if source_of == "command" else (
            "duplicate" if amount == mine else "conflict"
        )  # fmt: skip
        assert said == expected, (ref, said, recorded[ref])
    summary = json.loads(result.stdout)
    by_file = sum(1 for _, source_of in recorded.values() if source_of != "command")
    assert summary["applied"] == by_file
    assert summary["applied"] + summary["duplicate"] + summary["conflict"] == len(wanted)
    assert cli("verify").exit_code == 0
