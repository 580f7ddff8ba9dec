"""Rule 12: payment reversals, through ``payments reverse`` and through a payments chunk
(the statements a processor's file runs: ``services/payments.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.services import locks
from bnplctl.services import payments as rules
from tests.conftest import Cli, row_counts
from tests.helpers import unit
from tests.test_concurrency import Worker
from tests.test_sweep import seed

TODAY = date.today()


def _row(
    line: int,
    reference: str,
    amount: str | None,
    *,
    user: str | None = None,
    installment: int | None = None,
    kind: str | None = None,
    original: str | None = None,
    note: str | None = None,
) -> tuple[object, ...]:
    """A staged row (``PAYMENT_ROW_COLUMNS``), as a file's chunk gives it."""
    return (line, line, reference, amount, user, installment, None, kind, original, note)


def _apply(rows: Sequence[tuple[object, ...]], *, grace_days: int = 0) -> rules.AppliedChunk:
    """One chunk, staged and applied under a chunk's locks, as a payments file runs it."""
    with unit() as work:
        connection = work.connection
        staged = rules.stage_rows(connection, rules.copy_data(rows))
        locks.for_batch_chunk(connection)
        return rules.apply_chunk(
            connection,
            staged=staged,
            source="settlement.csv",
            now=datetime.now(UTC),
            actor="t",
            grace_days=grace_days,
        )


def _outcomes(applied: rules.AppliedChunk) -> dict[int, str]:
    found = {row.line: row.outcome for row in applied.not_applied}
    found.update({line: "reversed" for line in applied.reversed})
    return found


def _installments(engine: Engine) -> list[tuple[int, str, str, date | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, amount_due::text, status, overdue_since FROM installments ORDER BY id")
        ).all()
    return [(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def _verify_clean(cli: Cli) -> None:
    result = cli("verify", "-o", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_a_reversal_undoes_the_payment_newest_first(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply([_row(1, "P1", "150.00", user="u-1")])) == {}
    # P1 paid installment 1 (100, PAID) then 50 of installment 2: 60 back undoes the 50 of
    # installment 2 first, then 10 of installment 1.
    result = cli("payments", "reverse", "P1", "--reference", "RF-1", "--amount", "60.00",
                 "--reason", "refund")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "reversal 1: 60.00 of payment P1 recorded" in result.stderr
    assert _installments(engine) == [
        (1, "10.00", "UPCOMING", None),
        (2, "100.00", "UPCOMING", None),
        (3, "100.00", "UPCOMING", None),
    ]
    with engine.connect() as connection:
        undone = connection.execute(
            text(
                "SELECT payment_id, installment_id, reversal_id, user_id, amount::text"
                " FROM reversal_allocations ORDER BY installment_id"
            )
        ).all()
        reversal = connection.execute(
            text(
                "SELECT reference, payment_id, amount::text, reason, source FROM payment_reversals"
            )
        ).one()
        events = connection.execute(
            text("SELECT action, entity_id, details FROM audit_events ORDER BY id")
        ).all()
    assert [tuple(row) for row in undone] == [(1, 1, 1, "u-1", "10.00"), (1, 2, 1, "u-1", "50.00")]
    assert tuple(reversal) == ("RF-1", 1, "60.00", "refund", "command")
    reversed_events = [e for e in events if e.action == "payment.reversed"]
    assert len(reversed_events) == 1
    assert reversed_events[0].details == {
        "reversal_id": 1,
        "reference": "RF-1",
        "amount": "60.00",
        "source": "command",
        "reason": "refund",
    }
    listed = json.loads(cli("payments", "list", "-o", "json").stdout)
    assert [(p["reference"], p["amount"], p["reversed"]) for p in listed] == [
        ("P1", "150.00", "60.00")
    ]
    assert [(r["reference"], r["amount"], r["reason"]) for r in listed[0]["reversals"]] == [
        ("RF-1", "60.00", "refund")
    ]
    explained = json.loads(cli("debt", "explain", "u-1", "-o", "json").stdout)
    assert [(r["payment_id"], r["reference"], r["amount"]) for r in explained["reversals"]] == [
        (1, "RF-1", "60.00")
    ]
    reopened = [e for e in events if e.action == "installment.reopened"]
    assert [(e.entity_id, e.details["was"], e.details["now"]) for e in reopened] == [
        ("1", "PAID", "UPCOMING"),
        ("2", "UPCOMING", "UPCOMING"),
    ]
    _verify_clean(cli)


def test_a_reversal_after_a_sweep_reopens_overdue_and_makes_a_debtor(
    cli: Cli, engine: Engine
) -> None:
    # Installments due 40 and 10 days ago and in 20 days, all paid off: the plan is
    # COMPLETED and the user NORMAL; a sweep today marks nothing, but stands.
    seed(engine, 1, TODAY - timedelta(days=40))
    assert _outcomes(_apply([_row(1, "P1", "300.00", user="u-1")])) == {}
    assert _scalar(engine, "SELECT status FROM plans") == "COMPLETED"
    swept = cli("debt", "sweep", "--as-of", TODAY.isoformat())
    assert swept.exit_code == 0, swept.stderr
    run_id = _scalar(engine, "SELECT id FROM sweep_runs")
    assert _scalar(engine, "SELECT cutoff FROM sweep_runs") == TODAY
    result = cli("payments", "reverse", "P1", "--reference", "CB-1", "-o", "json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["amount"] == "300.00"
    assert [(u["installment_id"], u["status"]) for u in shown["undone"]] == [
        (1, "OVERDUE"),
        (2, "OVERDUE"),
        (3, "UPCOMING"),
    ]
    assert _installments(engine) == [
        (1, "100.00", "OVERDUE", TODAY),
        (2, "100.00", "OVERDUE", TODAY),
        (3, "100.00", "UPCOMING", None),
    ]
    assert _scalar(engine, "SELECT count(*) FROM installments WHERE overdue_run_id = "
                   f"{int(run_id)}") == 2  # fmt: skip
    assert _scalar(engine, "SELECT status FROM plans") == "ACTIVE"
    assert _scalar(engine, "SELECT status FROM users") == "DEBT_USER"
    assert _scalar(engine, "SELECT count(*) FROM installments WHERE paid_at IS NOT NULL") == 0
    with engine.connect() as connection:
        changed = connection.execute(
            text("SELECT details FROM audit_events WHERE action = 'user.status_changed'")
        ).scalar_one()
        plans = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'plan.reopened'")
        ).scalar_one()
    assert changed == {"from": "NORMAL", "to": "DEBT_USER", "reversal_id": 1}
    assert plans == 1
    # A debtor again: no new plan (rule 2), and paying again restores the user (rule 4).
    refused = cli("plans", "create", "--user", "u-1", "--amount", "100.00")
    assert refused.exit_code == 3
    assert _outcomes(_apply([_row(1, "P2", "200.00", user="u-1")])) == {}
    assert _scalar(engine, "SELECT status FROM users") == "NORMAL"
    _verify_clean(cli)


def test_without_a_standing_sweep_a_reopened_installment_is_upcoming(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, TODAY - timedelta(days=40))
    assert _outcomes(_apply([_row(1, "P1", "100.00", installment=1)])) == {}
    assert cli("debt", "sweep", "--as-of", TODAY.isoformat()).exit_code == 0
    assert _scalar(engine, "SELECT count(*) FROM installments WHERE status = 'OVERDUE'") == 1
    # The run marked installment 2; once reverted it no longer stands.
    reverted = cli("debt", "sweep", "--revert", str(_scalar(engine, "SELECT id FROM sweep_runs")))
    assert reverted.exit_code == 0, reverted.stderr
    assert cli("payments", "reverse", "P1", "--reference", "CB-1").exit_code == 0
    assert _installments(engine)[0] == (1, "100.00", "UPCOMING", None)
    assert _scalar(engine, "SELECT status FROM users") == "NORMAL"
    _verify_clean(cli)


def test_refund_cuts_are_never_undone(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply([_row(1, "P1", "130.00", user="u-1")])) == {}
    created = cli("refunds", "create", "--user", "u-1", "--transaction-id", "T-1",
                  "--amount", "150.00", "--plan", "1")  # fmt: skip
    assert created.exit_code == 0, created.stderr
    assert cli("refunds", "approve", "T-1").exit_code == 0
    # The refund cut installment 3 (100) and 50 of installment 2 (which P1 paid 30 of).
    assert _installments(engine) == [
        (1, "0.00", "PAID", None),
        (2, "20.00", "UPCOMING", None),
        (3, "0.00", "PAID", None),
    ]
    assert cli("payments", "reverse", "P1", "--reference", "CB-1").exit_code == 0
    assert _installments(engine) == [
        (1, "100.00", "UPCOMING", None),
        (2, "50.00", "UPCOMING", None),
        (3, "0.00", "PAID", None),
    ]
    _verify_clean(cli)


def test_a_reversal_refused_or_repeated_writes_nothing(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply([_row(1, "P1", "100.00", user="u-1")])) == {}
    assert cli("payments", "reverse", "P1", "--reference", "R1", "--amount", "40.00").exit_code == 0
    before = row_counts(engine)
    cases = [
        (["P1", "--reference", "R1", "--amount", "40.00"], 0,
         "reversal reference R1: recorded before; returning it, nothing written"),
        (["P1", "--reference", "R1"], 0, "recorded before"),  # no amount: the same reversal
        (["P1", "--reference", "R1", "--amount", "41.00"], 3,
         "error: reversal reference R1 was already used for another reversal (reversal 1);"
         " nothing was reversed"),
        (["P1", "--reference", "R2", "--amount", "60.01"], 3,
         "error: over_reversal: 60.01 is more than the 60.00 left of payment P1;"
         " nothing was reversed"),
        (["NOPE", "--reference", "R3"], 4, "error: no payment with reference NOPE"),
        (["P1", "--reference", "R4", "--amount", "0.00"], 2, "--amount"),
        (["P1", "--reference", "R4", "--amount", "1.234"], 2, "--amount"),
        (["P1"], 2, "--reference"),
        (["", "--reference", "R5"], 2, "PAYMENT_REFERENCE"),
    ]  # fmt: skip
    for args, code, said in cases:
        result = cli("payments", "reverse", *args)
        assert result.exit_code == code, (args, result.stderr)
        assert said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert row_counts(engine) == before
    # All that is left, then nothing is left.
    assert cli("payments", "reverse", "P1", "--reference", "R6").exit_code == 0
    nothing = cli("payments", "reverse", "P1", "--reference", "R7")
    assert nothing.exit_code == 3
    assert "nothing is left of payment P1 to reverse" in nothing.stderr
    assert _installments(engine)[0] == (1, "100.00", "UPCOMING", None)
    _verify_clean(cli)


def test_a_reversed_chargeback_pays_again_and_a_second_one_takes_that_back(
    cli: Cli, engine: Engine
) -> None:
    """Adyen's chargeback lifecycle: Settled, Chargeback, ChargebackReversed (the money
    back: a new payment to where the first went), SecondChargeback (of the first payment's
    reference: it takes back what the reinstating payment paid)."""
    seed(engine, 1, TODAY + timedelta(days=10))
    applied = _apply(
        [
            _row(1, "PSP-1", "100.00", user="u-1"),
            _row(2, "CB-1", "100.00", kind="reversal", original="PSP-1", note="Chargeback"),
            _row(3, "CBR-1", "100.00", kind="reinstating", original="PSP-1",
                 note="ChargebackReversed"),
            _row(4, "CB-2", "100.00", kind="reversal", original="PSP-1",
                 note="SecondChargeback"),
        ]
    )  # fmt: skip
    assert _outcomes(applied) == {2: "reversed", 4: "reversed"}
    assert len(applied.payment_ids) == 2
    with engine.connect() as connection:
        payments = connection.execute(
            text("SELECT id, reference, reinstates, user_id FROM payments ORDER BY id")
        ).all()
        undone = connection.execute(
            text(
                "SELECT reversal_id, payment_id, amount::text FROM reversal_allocations"
                " ORDER BY reversal_id"
            )  # fmt: skip
        ).all()
    assert [tuple(p) for p in payments] == [(1, "PSP-1", None, "u-1"), (2, "CBR-1", 1, "u-1")]
    assert [tuple(u) for u in undone] == [(1, 1, "100.00"), (2, 2, "100.00")]
    assert _installments(engine)[0] == (1, "100.00", "UPCOMING", None)
    # Each payment lists what was taken back of it, and by which reversal: the second
    # chargeback names PSP-1 but took back what CBR-1 paid.
    listed = json.loads(cli("payments", "list", "-o", "json").stdout)
    assert [
        (p["reference"], p["reversed"], [r["reference"] for r in p["reversals"]]) for p in listed
    ] == [("CBR-1", "100.00", ["CB-2"]), ("PSP-1", "100.00", ["CB-1"])]
    # Every row again: the same payments and reversals (duplicates), nothing written.
    before = row_counts(engine)
    again = _apply(
        [
            _row(1, "PSP-1", "100.00", user="u-1"),
            _row(2, "CB-1", "100.00", kind="reversal", original="PSP-1", note="Chargeback"),
            _row(3, "CBR-1", "100.00", kind="reinstating", original="PSP-1"),
            _row(4, "CB-2", "100.00", kind="reversal", original="PSP-1"),
        ]
    )
    assert _outcomes(again) == {1: "duplicate", 2: "duplicate", 3: "duplicate", 4: "duplicate"}
    assert row_counts(engine) == before
    _verify_clean(cli)


def test_rows_of_one_chunk_apply_in_file_order(cli: Cli, engine: Engine) -> None:
    """Pay, take it back, pay again, for one payer in one chunk: as one row per chunk."""
    rows = [
        _row(1, "P1", "100.00", user="u-1"),
        _row(2, "R1", "100.00", kind="reversal", original="P1"),
        _row(3, "P2", "100.00", installment=1),
        _row(4, "R2", "10.00", kind="reversal", original="P-unknown"),
        _row(5, "R3", "1.00", kind="reversal", original="P2"),
        _row(6, "R1", "100.00", kind="reversal", original="P1"),  # the chunk's own repeat
        _row(7, "R4", "99.01", kind="reversal", original="P2"),
        _row(8, "P3", "300.00", user="u-1"),
        _row(9, "RI", "5.00", kind="reinstating", original="P-unknown"),
    ]
    expected = {
        2: "reversed",
        4: "unknown_payment",
        5: "reversed",
        6: "duplicate",
        7: "over_reversal",
        8: "overpayment",
        9: "unknown_payment",
    }
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply(rows)) == expected
    together = _installments(engine), row_counts(engine)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE users, plans, installments, payments,"
                                " payment_allocations, payment_reversals, reversal_allocations,"
                                " audit_events RESTART IDENTITY CASCADE"))  # fmt: skip
    seed(engine, 1, TODAY + timedelta(days=10))
    one_by_one: dict[int, str] = {}
    for row in rows:
        one_by_one.update(_outcomes(_apply([row])))
    assert one_by_one == expected
    assert (_installments(engine), row_counts(engine)) == together
    assert _installments(engine)[0] == (1, "1.00", "UPCOMING", None)
    _verify_clean(cli)


def test_a_reversal_staged_before_its_payment_commits_waits_for_it(
    cli: Cli, engine: Engine
) -> None:
    """A file's next chunk is staged while the one before is applied: a reversal of a
    payment that chunk is recording is looked up again under the chunk's locks."""
    seed(engine, 1, TODAY + timedelta(days=10))
    now = datetime.now(UTC)
    with unit() as second:
        with unit() as first:  # commits when the block ends
            staged = rules.stage_rows(
                first.connection, rules.copy_data([_row(1, "P1", "60.00", user="u-1")])
            )
            locks.for_batch_chunk(first.connection)
            rules.apply_chunk(first.connection, staged=staged, source="f", now=now, actor="t")
            later = rules.stage_rows(
                second.connection,
                rules.copy_data(
                    [
                        _row(1, "R1", "20.00", kind="reversal", original="P1"),
                        _row(2, "RI", "20.00", kind="reinstating", original="P1"),
                    ]
                ),
            )
            assert later.deferred == 2
            waiting = Worker(lambda: locks.for_batch_chunk(second.connection))
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive()  # the chunk before holds the locks
        waiting.join(10)
        assert waiting.error is None and not waiting.is_alive()
        applied = rules.apply_chunk(
            second.connection, staged=later, source="g", now=now, actor="t", grace_days=0
        )
    assert _outcomes(applied) == {1: "reversed"}
    assert len(applied.payment_ids) == 1
    # 60 paid, 20 taken back, 20 paid again.
    assert _installments(engine)[0] == (1, "40.00", "UPCOMING", None)
    _verify_clean(cli)


def test_verify_finds_reversals_that_do_not_add_up(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply([_row(1, "P1", "100.00", user="u-1")])) == {}
    assert cli("payments", "reverse", "P1", "--reference", "R1", "--amount", "30.00").exit_code == 0
    _verify_clean(cli)
    with engine.begin() as connection:
        connection.execute(text("UPDATE payment_reversals SET amount = 31"))
    result = cli("verify", "-o", "json")
    assert result.exit_code == 69
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["payment_cuts"]["examples"] == ["reversal 1"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE payment_reversals SET amount = 130"))
        connection.execute(text("UPDATE reversal_allocations SET amount = 130"))
    checks = {c["check"]: c for c in json.loads(cli("verify", "-o", "json").stdout)["checks"]}
    assert checks["payment_cuts"]["examples"] == ["payment 1"]  # undoes more than it paid


@pytest.mark.parametrize("seed_number", [1, 2, 3])
def test_reversals_racing_payments_sweeps_and_refunds_keep_rule_9(
    cli: Cli, engine: Engine, seed_number: int
) -> None:
    """Reversals, payments, refund approvals and sweeps from four threads at once on six
    users' plans (some due in the past): every operation ends in a documented outcome and
    ``verify`` is clean."""
    import random

    from bnplctl.errors import BnplError
    from bnplctl.services.refunds import transition
    from bnplctl.services.reversals import reverse
    from tests.helpers import run_sweep

    users = 6
    seed(engine, users, TODAY - timedelta(days=45))
    picker = random.Random(seed_number)  # noqa: S311 - a workload
    for n in range(1, users + 1):  # refunds to approve later
        assert cli("refunds", "create", "--user", f"u-{n}", "--transaction-id", f"T-{n}",
                   "--amount", "70.00", "--plan", str(n)).exit_code == 0  # fmt: skip
    plans = [picker.randrange(60) for _ in range(240)]

    def worker(number: int) -> list[str]:
        done: list[str] = []
        for step in range(60):
            choice = plans[number * 60 + step] % 6
            user = f"u-{(number + step) % users + 1}"
            victim = f"P-{(number + 1) % 4}-{max(step - 2, 0)}"
            try:
                if choice in (0, 1):
                    applied = _apply([_row(1, f"P-{number}-{step}", "40.00", user=user)])
                elif choice == 2:  # a file's reversal
                    applied = _apply(
                        [_row(1, f"R-{number}-{step}", "15.00", kind="reversal", original=victim)],
                        grace_days=0,
                    )
                elif choice == 3:  # a command's: all that is left
                    with unit() as work:
                        reverse(
                            work.connection, victim, reference=f"C-{number}-{step}",
                            amount=None, reason=None, now=datetime.now(UTC), actor="t",
                            grace_days=0,
                        )  # fmt: skip
                    done.append("ok")
                    continue
                elif choice == 4:
                    run_sweep(as_of=TODAY - timedelta(days=step % 30))
                    done.append("sweep")
                    continue
                else:
                    with unit() as work:
                        transition(work.session, f"T-{(number + step) % users + 1}", "approve",
                                   reason=None, actor="t")  # fmt: skip
                    done.append("approved")
                    continue
            except BnplError as exc:  # refused (3), unknown (4), another sweep runs (75)
                assert int(exc.exit_code) in (3, 4, 75), exc.message
                done.append(f"exit {int(exc.exit_code)}")
                continue
            done += [row.outcome for row in applied.not_applied] or ["ok"]
        return done

    threads = [Worker(lambda n=n: worker(n)) for n in range(4)]  # type: ignore[misc]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert thread.error is None, thread.error
    outcomes = {outcome for thread in threads for outcome in thread.result}
    assert outcomes <= {"ok", "sweep", "approved", "exit 3", "exit 4", "exit 75",
                        "overpayment", "unknown_payment", "over_reversal"}  # fmt: skip
    assert "ok" in outcomes
    assert _scalar(engine, "SELECT count(*) FROM payment_reversals") > 0
    _verify_clean(cli)


def test_payments_reverse_help_fits_80_columns(cli: Cli) -> None:
    result = cli("payments", "reverse", "--help")
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "PAYMENT_REFERENCE" in result.stdout


def test_payments_reverse_lists_what_it_undid_as_csv(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, TODAY + timedelta(days=10))
    assert _outcomes(_apply([_row(1, "P1", "150.00", user="u-1")])) == {}
    result = cli("payments", "reverse", "P1", "--reference", "R1", "--amount", "70.00",
                 "-o", "csv")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "reference,payment_id,installment_id,amount,status,amount_due",
        "R1,1,1,20.00,UPCOMING,20.00",
        "R1,1,2,50.00,UPCOMING,100.00",
    ]
