"""Collections and corrections: payments as records (rule 10), partial payments (rule 4),
``debt explain``, undoing a sweep (rule 11), ``users update``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl.errors import Refused
from bnplctl.services import locks
from bnplctl.services.installments import pay
from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args, run_sweep, unit
from tests.test_concurrency import Worker, _wait_until_blocked
from tests.test_sweep import seed, statuses


def _json(cli: Cli, *args: str, code: int = 0) -> Any:
    result = cli(*args, "-o", "json")
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout) if result.stdout else None


def _verify_clean(cli: Cli) -> None:
    report = _json(cli, "verify")
    assert report["ok"], report


def _installment(engine: Engine, installment_id: int) -> tuple[str, str]:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT amount_due::text, status FROM installments WHERE id = :id"),
            {"id": installment_id},
        ).one()
    return row[0], row[1]


def _ids(engine: Engine, user_id: str) -> list[int]:
    """The ids of a seeded user's installments, by due date."""
    with engine.connect() as connection:
        return [
            int(row)
            for row in connection.execute(
                text("SELECT id FROM installments WHERE user_id = :id ORDER BY due_date"),
                {"id": user_id},
            ).scalars()
        ]


def _user_status(engine: Engine, user_id: str = "u-1") -> str:
    with engine.connect() as connection:
        status: str = connection.execute(
            text("SELECT status FROM users WHERE user_id = :id"), {"id": user_id}
        ).scalar_one()
    return status


# --- payments -------------------------------------------------------------------------


def test_a_partial_payment_lowers_what_is_due_and_keeps_the_status(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 1, 15), dry_run=False, actor="t")
    assert _installment(engine, 1) == ("100.00", "OVERDUE")

    part = _json(cli, "installments", "pay", "1", "--amount", "40")

    assert part["installments"][0]["amount_due"] == "60.00"
    assert part["installments"][0]["status"] == "OVERDUE"
    (payment,) = part["payments"]
    assert (payment["amount"], payment["source"], payment["reference"]) == (
        "40.00",
        "command",
        None,
    )
    assert payment["allocations"] == [{"installment_id": 1, "amount": "40.00"}]
    assert part["users_restored"] == [] and _user_status(engine) == "DEBT_USER"
    _verify_clean(cli)

    rest = _json(cli, "installments", "pay", "1", "--amount", "60.00")

    assert _installment(engine, 1) == ("0.00", "PAID")
    assert rest["users_restored"] == ["u-1"] and _user_status(engine) == "NORMAL"
    _verify_clean(cli)


def test_more_than_is_due_is_refused_and_writes_nothing(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 1, 1))
    assert cli("installments", "pay", "1", "--amount", "30").exit_code == 0
    before = (row_counts(engine), statuses(engine), _installment(engine, 1))

    refused = cli("installments", "pay", "1", "--amount", "70.01")

    assert refused.exit_code == 3
    assert refused.stderr == (
        "error: overpayment: 70.01 is more than the 70.00 due on installment 1; nothing was paid\n"
    )
    assert (row_counts(engine), statuses(engine), _installment(engine, 1)) == before


def test_a_reference_makes_a_payment_idempotent(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    first = _json(cli, "installments", "pay", "1", "--amount", "25", "--reference", "TRX-1")

    again = cli("installments", "pay", "1", "--amount", "25", "--reference", "TRX-1", "-o", "json")

    assert again.exit_code == 0
    assert "TRX-1: recorded before" in again.stderr
    assert json.loads(again.stdout)["payments"] == first["payments"]
    assert row_counts(engine)["payments"] == 1
    assert _installment(engine, 1) == ("75.00", "UPCOMING")
    theirs = str(_ids(engine, "u-2")[0])
    for other in (["1", "--amount", "26"], [theirs, "--amount", "25"]):
        conflict = cli("installments", "pay", *other, "--reference", "TRX-1")
        assert conflict.exit_code == 3
        assert "TRX-1 was already used for another payment" in conflict.stderr
    assert row_counts(engine)["payments"] == 1
    _verify_clean(cli)


def test_an_amount_or_a_reference_names_one_installment(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 1, 1))
    for option in (["--amount", "10"], ["--reference", "R-1"]):
        result = cli("installments", "pay", "1", "2", *option)
        assert result.exit_code == 2
        assert "name only one" in result.stderr
    assert row_counts(engine)["payments"] == 0


def test_paying_several_installments_records_a_payment_each(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t")

    wanted = sorted([*_ids(engine, "u-1"), _ids(engine, "u-2")[0]])

    paid = _json(cli, "installments", "pay", *map(str, wanted))

    assert [p["allocations"] for p in paid["payments"]] == [
        [{"installment_id": n, "amount": "100.00"}] for n in wanted
    ]
    assert [p["user_id"] for p in paid["payments"]].count("u-1") == 3
    assert paid["plans_completed"] == [1]
    assert paid["users_restored"] == ["u-1"]  # u-2 still owes installment 5 (OVERDUE)
    assert _user_status(engine, "u-2") == "DEBT_USER"
    _verify_clean(cli)


def test_payments_list_by_user_and_since(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    first, second = _ids(engine, "u-1")[:2]
    for installment in (first, _ids(engine, "u-2")[0], second):
        assert cli("installments", "pay", str(installment)).exit_code == 0

    mine = _json(cli, "payments", "list", "--user", "u-1")
    csv = cli("payments", "list", "--user", "u-1", "-o", "csv").stdout.splitlines()

    assert [p["allocations"][0]["installment_id"] for p in mine] == [second, first]  # newest
    assert {p["user_id"] for p in mine} == {"u-1"}
    assert csv[0] == "id,reference,user_id,amount,reversed,paid_at,source"
    assert len(csv) == 3 and all(",u-1,100.00," in line for line in csv[1:])
    assert _json(cli, "payments", "list", "--since", "2100-12-31") == []
    cut = cli("payments", "list", "--limit", "1", "-o", "json")
    assert len(json.loads(cut.stdout)) == 1 and "showing 1 of 3" in cut.stderr


def test_verify_finds_a_payment_its_allocations_do_not_add_up_to(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 1, 1))
    paid = _json(cli, "installments", "pay", "1", "--amount", "10")
    payment = paid["payments"][0]["id"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE payments SET amount = 11 WHERE id = :id"), {"id": payment})

    report = _json(cli, "verify", code=69)

    found = {c["check"]: (c["violations"], c["examples"]) for c in report["checks"]}
    assert found["payment_cuts"] == (1, [f"payment {payment}"])
    assert all(count == 0 for name, (count, _) in found.items() if name != "payment_cuts")


def test_the_same_new_reference_from_two_writers_records_one_payment(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 2, date(2026, 1, 1))
    with unit() as work:
        session = work.session
        first = pay(session, [1], actor="a", reference="TRX-9")
        # The other user's payment with the same reference waits for this one to commit.
        theirs = _ids(engine, "u-2")[0]
        second = Worker(lambda: _pay_in_own_unit([theirs], reference="TRX-9"))
        second.start()
        with engine.connect() as watcher:
            _wait_until_blocked(watcher)
    second.join(timeout=30)

    assert first["payments"][0]["reference"] == "TRX-9"
    assert isinstance(second.error, Refused)
    assert row_counts(engine)["payments"] == 1
    assert _installment(engine, theirs) == ("100.00", "UPCOMING")
    _verify_clean(cli)


def _pay_in_own_unit(ids: list[int], **options: Any) -> dict[str, Any]:
    with unit() as work:
        session = work.session
        return pay(session, ids, actor="b", **options)


def test_a_sweep_waits_for_a_partial_payment_and_verify_stays_clean(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 1, 15), dry_run=False, actor="t")
    with unit() as work:
        session = work.session
        pay(session, [1], actor="a", amount=None)  # clears the OVERDUE one, holds the lock
        sweeper = Worker(lambda: run_sweep(as_of=date(2026, 2, 15), dry_run=False, actor="t"))
        sweeper.start()
        with engine.connect() as watcher:
            _wait_until_blocked(watcher)
    sweeper.join(timeout=30)

    assert sweeper.error is None
    assert _installment(engine, 2) == ("100.00", "OVERDUE")
    assert _user_status(engine) == "DEBT_USER"
    _verify_clean(cli)


# --- debt explain ---------------------------------------------------------------------


def test_debt_explain_says_since_when_what_clears_it_and_what_is_next(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")
    run_sweep(as_of=date(2026, 2, 5), dry_run=False, actor="t")
    assert cli("installments", "pay", "1", "--amount", "30").exit_code == 0

    explained = _json(cli, "debt", "explain", "u-1")

    assert explained["user_status"] == "DEBT_USER"
    assert explained["overdue_since"] == "2026-01-10"
    assert explained["to_clear"] == "170.00"
    overdue = explained["overdue_installments"]
    assert [(i["id"], i["amount_due"], i["overdue_since"]) for i in overdue] == [
        (1, "70.00", "2026-01-10"),
        (2, "100.00", "2026-02-05"),
    ]
    assert explained["next_due"] == {
        "id": 3, "plan_id": 1, "amount_due": "100.00", "due_date": "2026-03-02",
        "past_due": True,  # today is later, and no sweep ran since
    }  # fmt: skip
    assert explained["marked_by_run"] == 1
    assert [i["sweep_run"] for i in overdue] == [1, 2]
    assert explained["history"][0]["action"] == "payment.recorded"

    told = cli("debt", "explain", "u-1").stdout
    assert told.startswith(
        "u-1 is DEBT_USER since 2026-01-10 (sweep run 1): 2 installments overdue; paying"
        " 170.00 clears it. Next due: 100.00 on 2026-03-02 (installment 3 of plan 1; past"
        " due, the next sweep marks it OVERDUE)."
    )
    csv = cli("debt", "explain", "u-1", "-o", "csv").stdout.splitlines()
    assert csv[0] == "user_id,id,plan_id,amount_due,due_date,overdue_since,days_overdue"
    assert len(csv) == 3
    unknown = cli("debt", "explain", "nobody")
    assert (unknown.exit_code, unknown.stderr) == (4, "error: user nobody not found\n")


def test_debt_explain_of_a_user_in_good_standing(cli: Cli, engine: Engine) -> None:
    seed(engine, 1, date(2026, 1, 1))
    explained = _json(cli, "debt", "explain", "u-1")
    assert (explained["overdue_since"], explained["to_clear"]) == (None, "0.00")
    assert explained["overdue_installments"] == []
    told = cli("debt", "explain", "u-1").stdout
    assert told.startswith("u-1 is NORMAL: nothing is overdue. Next due: 100.00 on 2026-01-01")


# --- debt sweep --revert --------------------------------------------------------------


def _runs(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, outcome FROM sweep_runs ORDER BY id")).all()
    return [(int(row[0]), str(row[1])) for row in rows]


def test_reverting_the_latest_run_undoes_what_it_marked(cli: Cli, engine: Engine) -> None:
    seed(engine, 2, date(2026, 1, 1))
    (one, two, _), (four, five, _) = _ids(engine, "u-1"), _ids(engine, "u-2")
    first = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")  # one and four
    second = run_sweep(as_of=date(2026, 2, 5), dry_run=False, actor="t")  # two and five
    assert cli("installments", "pay", str(five)).exit_code == 0  # paid since: stays PAID
    before = statuses(engine)

    early = cli("debt", "sweep", "--revert", str(first.run_id))
    dry = _json(cli, "debt", "sweep", "--revert", str(second.run_id), "--dry-run")

    assert early.exit_code == 3
    assert f"not the latest run that marked something (that is run {second.run_id})" in (
        early.stderr
    )
    assert dry == {
        "run_id": second.run_id, "dry_run": True, "installments_restored": 1,
        "users_restored": 0, "runs_reverted_with_it": [],
    }  # fmt: skip
    assert statuses(engine) == before

    undone = _json(cli, "debt", "sweep", "--revert", str(second.run_id))

    assert (undone["installments_restored"], undone["users_restored"]) == (1, 0)
    installments, users = statuses(engine)
    assert dict(installments)[two] == "UPCOMING" and dict(installments)[five] == "PAID"
    assert dict(installments)[one] == "OVERDUE" and dict(installments)[four] == "OVERDUE"
    assert dict(users) == {
        "u-1": "DEBT_USER",
        "u-2": "DEBT_USER",
    }
    assert _runs(engine)[-1] == (second.run_id, "REVERTED")
    _verify_clean(cli)
    assert cli("debt", "sweep", "--revert", str(second.run_id)).exit_code == 3

    assert _json(cli, "debt", "sweep", "--revert", str(first.run_id))["users_restored"] == 2
    installments, users = statuses(engine)
    assert {status for _, status in users} == {"NORMAL"}
    assert "OVERDUE" not in {status for _, status in installments}
    with engine.connect() as connection:
        assert (
            connection.execute(
                text(
                    "SELECT count(*) FROM installments WHERE overdue_since IS NOT NULL"
                    " AND status <> 'PAID'"
                )  # fmt: skip
            ).scalar_one()
            == 0
        )
        events = (
            connection.execute(
                text("SELECT entity_id FROM audit_events WHERE action = 'sweep.reverted'")
            )
            .scalars()
            .all()
        )
    assert sorted(events) == sorted([str(first.run_id), str(second.run_id)])
    _verify_clean(cli)


def test_revert_of_an_unknown_run_is_not_found_and_a_running_sweep_makes_it_wait(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    run = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")
    assert cli("debt", "sweep", "--revert", "999").exit_code == 4
    assert cli("debt", "sweep", "--revert", "1", "--as-of", "2026-01-10").exit_code == 2
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": 0x62_6E_70_6C_5357})
        held = cli("debt", "sweep", "--revert", str(run.run_id))
        holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": 0x62_6E_70_6C_5357})
        holder.commit()
    assert held.exit_code == 75
    assert _runs(engine) == [(run.run_id, "SUCCEEDED")]
    assert locks.DEBT_LOCK_ID != 0x62_6E_70_6C_5357


# --- users update ---------------------------------------------------------------------


def test_users_update_checks_masks_and_audits_without_values(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    new_phone = "+998 93 777 66 55"

    bad = cli("users", "update", JOHN["user_id"], "--phone", "12345")
    updated = cli("users", "update", JOHN["user_id"], "--phone", new_phone, "--name", "J. Doe",
                  "-o", "json")  # fmt: skip
    same = cli("users", "update", JOHN["user_id"], "--name", "J. Doe")

    assert bad.exit_code == 65 and "12345" not in bad.stderr
    shown = json.loads(updated.stdout)
    assert (shown["full_name"], shown["phone_number"]) == ("J. Doe", "+998****6655")
    assert same.exit_code == 0 and "nothing changed" in same.stderr
    with engine.connect() as connection:
        phone = connection.execute(text("SELECT phone_e164 FROM users")).scalar_one()
        details = (
            connection.execute(
                text("SELECT details::text FROM audit_events WHERE action = 'user.updated'")
            )
            .scalars()
            .all()
        )
    assert phone == "+998937776655"
    assert details == ['{"fields": ["full_name", "phone_number"]}']
    everything = updated.stdout + updated.stderr + same.stdout + "".join(details)
    assert "937776655" not in everything
    assert cli("users", "update", "nobody", "--name", "X").exit_code == 4
    assert cli("users", "update", JOHN["user_id"]).exit_code == 2


@pytest.mark.parametrize("entity", ["payment"])
def test_audit_list_knows_payments(cli: Cli, engine: Engine, entity: str) -> None:
    seed(engine, 1, date(2026, 1, 1))
    assert cli("installments", "pay", "1").exit_code == 0
    events = _json(cli, "audit", "list", "--entity", entity)
    assert [e["action"] for e in events] == ["payment.recorded"]


def test_a_reference_for_a_payment_in_full_is_not_a_partial_payment_again(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 1, date(2026, 1, 1))
    assert cli("installments", "pay", "1", "--amount", "50", "--reference", "P50").exit_code == 0

    in_full = cli("installments", "pay", "1", "--reference", "P50")  # not what P50 was

    assert in_full.exit_code == 3
    assert "P50 was already used for another payment" in in_full.stderr
    assert _installment(engine, 1) == ("50.00", "UPCOMING")
    assert cli("installments", "pay", "2", "--reference", "FULL").exit_code == 0
    again = cli("installments", "pay", "2", "--reference", "FULL")
    assert again.exit_code == 0
    assert "payment reference FULL: recorded before" in again.stderr
    assert "100.00 recorded before" in again.stderr
    assert row_counts(engine)["payments"] == 2
    only_amount = cli("installments", "pay", "1", "2", "--amount", "5")
    assert only_amount.stderr == "error: --amount pays one installment: name only one\n"


@pytest.mark.parametrize("name", ["John 4111111111111111", "+998901112233", "AA 1234567"])
def test_a_number_typed_into_a_name_is_refused_everywhere(
    cli: Cli, engine: Engine, name: str, tmp_path: Path
) -> None:
    # It would be shown unmasked wherever the name is shown.
    assert cli(*add_args(JOHN)).exit_code == 0
    expected = "name: must not contain a number of 5 or more digits"

    update = cli("users", "update", JOHN["user_id"], "--name", name)
    add = cli(*add_args(dict(JOHN, user_id="usr-009", passport="AB1112223", name=name)))
    source = tmp_path / "users.csv"
    source.write_text(
        "user_id,name,phone,passport,card,dob\n"
        f'usr-010,"{name}",+998901110000,AD0000001,4012888888881881,1990-01-01\n'
    )
    imported = cli("users", "import", str(source), "-o", "json")

    assert (update.exit_code, add.exit_code, imported.exit_code) == (65, 65, 5)
    assert expected in update.stderr and expected in add.stderr
    assert expected in json.loads(imported.stdout)["rejected"][0]["reason"]
    for result in (update, add, imported):
        assert "4111111111111111" not in result.stdout + result.stderr
    with engine.connect() as connection:
        names = connection.execute(text("SELECT full_name FROM users")).scalars().all()
    assert names == [JOHN["name"]]


def test_audit_events_of_the_orm_paths_take_the_one_clock(cli: Cli, engine: Engine) -> None:
    # As every statement that writes an event binds the unit's now: a frozen clock
    # (and --as-of runs) see the same time in the events as in the rows.
    from datetime import UTC, datetime

    from freezegun import freeze_time

    assert cli(*add_args(JOHN)).exit_code == 0
    frozen = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    with freeze_time(frozen):
        assert cli("users", "update", JOHN["user_id"], "--name", "J. Doe").exit_code == 0
        assert cli("plans", "create", "--user", JOHN["user_id"], "--amount", "90").exit_code == 0
    with engine.connect() as connection:
        moments = connection.execute(
            text(
                "SELECT action, occurred_at FROM audit_events"
                " WHERE action IN ('user.updated', 'plan.created') ORDER BY action"
            )
        ).all()
        updated_at = connection.execute(text("SELECT updated_at FROM users")).scalar_one()
    assert [(action, moment) for action, moment in moments] == [
        ("plan.created", frozen),
        ("user.updated", frozen),
    ]
    assert updated_at == frozen


# --- undo, and what the audit trail and the views say after it (issue 24) ---------------


def _status_changes(engine: Engine) -> list[tuple[str, str, dict[str, Any], Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT entity_id, actor, details, occurred_at FROM audit_events"
                " WHERE action = 'user.status_changed' ORDER BY id"
            )
        ).all()
    return [(str(row[0]), str(row[1]), dict(row[2]), row[3]) for row in rows]


def test_runs_that_marked_nothing_do_not_stand_in_the_way_of_a_revert(
    cli: Cli, engine: Engine
) -> None:
    seed(engine, 2, date(2026, 1, 1))
    worked = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")
    again = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")  # already swept
    earlier = run_sweep(as_of=date(2026, 1, 5), dry_run=False, actor="t")
    later = run_sweep(as_of=date(2026, 1, 11), dry_run=False, actor="t")  # nothing due since
    assert worked.installments_marked_overdue == 2
    assert [run.installments_marked_overdue for run in (again, earlier, later)] == [0, 0, 0]

    nothing = cli("debt", "sweep", "--revert", str(again.run_id))
    undone = _json(cli, "debt", "sweep", "--revert", str(worked.run_id))

    assert nothing.exit_code == 3 and "it marked nothing" in nothing.stderr
    assert (undone["installments_restored"], undone["users_restored"]) == (2, 2)
    installments, users = statuses(engine)
    assert {status for _, status in installments} == {"UPCOMING"}
    assert {status for _, status in users} == {"NORMAL"}
    # The no-op runs stood on the reverted one's work: their dates are reverted with it.
    assert undone["runs_reverted_with_it"] == [again.run_id, earlier.run_id, later.run_id]
    assert {outcome for _, outcome in _runs(engine)} == {"REVERTED"}
    _verify_clean(cli)

    # A later run that did mark something still stands in the way (exit 3).
    redone = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="t")
    further = run_sweep(as_of=date(2026, 2, 5), dry_run=False, actor="t")
    refused = cli("debt", "sweep", "--revert", str(redone.run_id))
    assert refused.exit_code == 3
    assert f"not the latest run that marked something (that is run {further.run_id})" in (
        refused.stderr
    )
    _verify_clean(cli)


def test_the_sweep_and_its_revert_audit_each_user_they_mark_and_restore(
    cli: Cli, engine: Engine
) -> None:
    from datetime import UTC, datetime

    from freezegun import freeze_time

    seed(engine, 2, date(2026, 1, 1))
    with engine.begin() as connection:  # u-2 is a debtor already: no event for them
        connection.execute(
            text(
                "UPDATE installments SET status = 'OVERDUE', overdue_since = '2026-01-02'"
                " WHERE user_id = 'u-2' AND sequence = 1;"
                " UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'u-2'"
            )
        )
    marked_at = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    with freeze_time(marked_at):
        run = run_sweep(as_of=date(2026, 1, 10), dry_run=False, actor="cron")
        run_sweep(as_of=date(2026, 2, 5), dry_run=False, actor="cron")  # u-1 already marked
    reverting = [str(run.run_id)]

    marked = _status_changes(engine)
    assert marked == [
        ("u-1", "cron", {"from": "NORMAL", "to": "DEBT_USER", "run_id": run.run_id,
                         "business_date": "2026-01-10"}, marked_at),
    ]  # fmt: skip
    assert run.run_id is not None
    assert cli("debt", "sweep", "--revert", str(run.run_id + 1)).exit_code == 0
    undone = cli("--actor", "ops", "debt", "sweep", "--revert", *reverting)
    assert undone.exit_code == 0, undone.stderr

    restored = _status_changes(engine)[1:]
    assert [(user, actor, details) for user, actor, details, _ in restored] == [
        ("u-1", "ops", {"from": "DEBT_USER", "to": "NORMAL", "run_id": run.run_id,
                        "business_date": "2026-01-10"}),
    ]  # fmt: skip
    history = _json(cli, "debt", "explain", "u-1")["history"]
    changes = [
        (event["details"]["from"], event["details"]["to"])
        for event in history
        if event["action"] == "user.status_changed"
    ]
    assert changes == [("DEBT_USER", "NORMAL"), ("NORMAL", "DEBT_USER")]  # newest first
    _verify_clean(cli)


def test_after_a_sweep_for_a_future_date_nothing_is_overdue_by_negative_days(
    cli: Cli, engine: Engine
) -> None:
    from freezegun import freeze_time

    seed(engine, 1, date(2026, 3, 20))
    with freeze_time("2026-03-10 12:00:00"):
        run = _json(cli, "debt", "sweep", "--as-of", "2026-04-01", "--allow-future")
        shown = _json(cli, "debt", "show", "u-1")
        explained = _json(cli, "debt", "explain", "u-1")
        told = cli("debt", "explain", "u-1").stdout
        table = cli("debt", "show", "u-1").stdout

    assert [i["days_overdue"] for i in shown["overdue_installments"]] == [0]
    assert [i["days_overdue"] for i in explained["overdue_installments"]] == [0]
    assert explained["marked_ahead"] == {
        "run_id": run["run_id"], "business_date": "2026-04-01", "installments": [1],
    }  # fmt: skip
    assert f"marked by a sweep for a future date (2026-04-01, run {run['run_id']})" in told, told
    assert "-10" not in table
