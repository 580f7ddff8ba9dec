"""Onboarding through the real CLI: outcomes, exit codes, rows, audit events."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, MALIKA, SAMPLE_CSV, TIMUR, add_args


def _users(engine: Engine) -> list[tuple[str, str, str, str, str]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT user_id, phone_e164, card_brand, card_first6 || card_last4, "
                    "passport_masked FROM users ORDER BY user_id"
                )
            )
        ]


def test_add_prints_the_masked_user_and_stores_protected_values(cli: Cli, engine: Engine) -> None:
    result = cli(*add_args(JOHN), "-o", "json")

    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["user_id"] == "usr-001"
    assert shown["phone_number"] == "+998****4567"
    assert shown["card_number"] == "4111 **** **** 1111"
    assert shown["passport_number"] == "AA*******"
    assert shown["status"] == "NORMAL"
    assert shown["date_of_birth"] == "1990-05-20"
    assert _users(engine) == [("usr-001", "+998901234567", "visa", "4111111111", "AA*******")]


def test_add_generates_a_user_id_when_absent(cli: Cli, engine: Engine) -> None:
    args = add_args(JOHN)
    del args[2:4]
    result = cli(*args, "-o", "json")

    assert result.exit_code == 0, result.stderr
    generated = json.loads(result.stdout)["user_id"]
    assert generated.startswith("usr-") and len(generated) == 14
    assert [row[0] for row in _users(engine)] == [generated]


def test_add_prompts_for_card_and_passport_without_echo(cli: Cli, engine: Engine) -> None:
    args = [a for a in add_args(JOHN) if a not in ("--card", JOHN["card"], "--passport")]
    args.remove(JOHN["passport"])
    result = cli(*args, input=f"{JOHN['passport']}\n{JOHN['card']}\n")

    assert result.exit_code == 0, result.stderr
    assert JOHN["card"] not in result.output
    assert JOHN["passport"] not in result.output
    assert len(_users(engine)) == 1


def test_add_reads_left_out_values_from_piped_stdin_and_prints_only_the_result(
    cli: Cli, engine: Engine
) -> None:
    args = [a for a in add_args(JOHN) if a not in ("--card", JOHN["card"], "--passport")]
    args.remove(JOHN["passport"])
    result = cli(*args, "-o", "json", input=f"{JOHN['passport']}\r\n{JOHN['card']}\n")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["passport_number"] == "AA*******"  # no question in it
    assert result.stderr == ""


def test_add_with_stdin_ended_before_a_value_is_a_usage_error(cli: Cli, engine: Engine) -> None:
    args = [a for a in add_args(JOHN) if a not in ("--card", JOHN["card"])]
    result = cli(*args, input="")

    assert result.exit_code == 2
    assert result.stderr == "error: --card: required (standard input ended before it was given)\n"
    assert row_counts(engine)["users"] == 0


def test_add_at_a_terminal_asks_until_answered(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnplctl.cli import users

    answers = iter(["", JOHN["phone"], " ", JOHN["card"]])
    asked: list[tuple[str, bool]] = []

    def typed(label: str, *, secret: bool) -> str:
        asked.append((label, secret))
        return next(answers) + "\n"

    monkeypatch.setattr(users, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr(users, "_read_answer", typed)
    args = [a for a in add_args(JOHN) if a not in ("--card", JOHN["card"], "--phone")]
    args.remove(JOHN["phone"])
    result = cli(*args, "-o", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["card_number"] == "4111 **** **** 1111"
    # A blank answer is asked again; the phone is shown as typed, the card is not.
    assert asked == [("Phone", False), ("Phone", False), ("Card", True), ("Card", True)]


@pytest.mark.parametrize(("key", "code"), [(EOFError, 2), (KeyboardInterrupt, 130)])
def test_add_at_a_terminal_ctrl_d_is_exit_2_and_ctrl_c_exit_130(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch, key: type, code: int
) -> None:
    from bnplctl.cli import users

    def pressed(label: str, *, secret: bool) -> str:
        raise key

    monkeypatch.setattr(users, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr(users, "_read_answer", pressed)
    args = [a for a in add_args(JOHN) if a not in ("--card", JOHN["card"])]
    result = cli(*args)

    assert result.exit_code == code
    assert len(result.stderr.strip().splitlines()) == 1
    assert row_counts(engine)["users"] == 0


def test_duplicate_user_id_is_refused_and_changes_nothing(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    before = row_counts(engine)
    again = dict(MALIKA, user_id=JOHN["user_id"])
    result = cli(*add_args(again))

    assert result.exit_code == 3
    assert "duplicate of user usr-001 (same user_id)" in result.stderr
    assert row_counts(engine) == before


def test_duplicate_passport_is_refused(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    before = row_counts(engine)
    same_passport = dict(MALIKA, passport="aa 1234567")
    result = cli(*add_args(same_passport))

    assert result.exit_code == 3
    assert "duplicate of user usr-001 (same passport)" in result.stderr
    assert row_counts(engine) == before


def test_invalid_field_exits_65_naming_the_field_and_a_bad_option_2(
    cli: Cli, engine: Engine
) -> None:
    cases = {
        "phone": ("+99890", "phone:"),
        "card": ("4111111111111112", "card: fails the Luhn check"),
        "passport": ("1234567AA", "passport: must be letters followed by digits"),
        "name": ("", "name:"),
    }
    cases_with_control = [("name", "John\x07Doe", "name: must not contain control characters")]
    for field, value, expected in [(f, v, e) for f, (v, e) in cases.items()] + cases_with_control:
        result = cli(*add_args(dict(JOHN, **{field: value})))
        assert result.exit_code == 65, (field, result.stderr)
        assert expected in result.stderr, field
        assert len(result.stderr.strip().splitlines()) == 1, field
    # The date of birth and the user id are option values: a malformed one is a usage error.
    options = {
        "dob": ("2015-06-01", "the user must be at least 18"),
        "user_id": ("bad id!", "1-64"),
    }
    for field, (value, expected) in options.items():
        result = cli(*add_args(dict(JOHN, **{field: value})))
        option = "--" + field.replace("_", "-")
        assert result.exit_code == 2, (field, result.stderr)
        assert f"Invalid value for '{option}': {expected}" in result.stderr, field
    assert row_counts(engine)["users"] == 0


def test_import_csv_applies_valid_rows_and_reports_the_rest(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(SAMPLE_CSV)
    rejects = tmp_path / "rejects.csv"
    result = cli("users", "import", str(source), "--rejects", str(rejects), "-o", "json")

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("rows", "created", "duplicate", "invalid")} == {
        "rows": 5,
        "created": 3,
        "duplicate": 0,
        "invalid": 2,
    }
    assert [(r["line"], r["user_id"]) for r in summary["rejected"]] == [
        (5, "usr-004"),
        (6, "usr-005"),
    ]
    with rejects.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line"], r["user_id"], r["outcome"]) for r in rows] == [
        ("5", "usr-004", "invalid"),
        ("6", "usr-005", "invalid"),
    ]
    assert rows[0]["reason"] == "card: fails the Luhn check"
    assert [row[0] for row in _users(engine)] == ["usr-001", "usr-002", "usr-003"]


def test_reimport_reports_duplicates_and_changes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(SAMPLE_CSV)
    cli("users", "import", str(source))
    before = row_counts(engine)
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["duplicate"], summary["invalid"]) == (0, 3, 2)
    assert [r["reason"] for r in summary["rejected"] if r["outcome"] == "duplicate"] == [
        f"duplicate of user {user_id} (same user_id)"
        for user_id in ("usr-001", "usr-002", "usr-003")
    ]
    assert row_counts(engine) == before


def test_import_duplicates_inside_one_file(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    rows = [JOHN, dict(MALIKA, user_id="usr-001"), dict(TIMUR, passport=JOHN["passport"])]
    source = tmp_path / "users.jsonl"
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["duplicate"]) == (1, 2)
    assert [(r["line"], r["reason"]) for r in summary["rejected"]] == [
        (2, "duplicate of line 1 (same user_id)"),
        (3, "duplicate of line 1 (same passport)"),
    ]
    assert [row[0] for row in _users(engine)] == ["usr-001"]


def test_import_json_array_from_stdin_with_line_numbers(cli: Cli, engine: Engine) -> None:
    document = json.dumps([JOHN, dict(MALIKA, phone="12345"), TIMUR], indent=2)
    result = cli("users", "import", "-", "-o", "json", input=document)

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (2, 1)
    (rejected,) = summary["rejected"]
    assert rejected["user_id"] == "usr-002"
    assert rejected["line"] == document.splitlines().index("  {", 2) + 1
    assert [row[0] for row in _users(engine)] == ["usr-001", "usr-003"]


def test_import_takes_rows_the_fast_path_leaves_to_the_model(cli: Cli, engine: Engine) -> None:
    # A card as a JSON number and a name ending in a no-break space: not plainly valid
    # text for the batch fast path, valid for the model, which normalises them.
    john = dict(JOHN, card=4111111111111111, name="John Doe\u00a0")
    result = cli("users", "import", "-", "-o", "json", input=json.dumps([john]))

    assert result.exit_code == 0, result.stderr
    assert _users(engine) == [("usr-001", "+998901234567", "visa", "4111111111", "AA*******")]
    with engine.connect() as connection:
        name = connection.execute(text("SELECT full_name FROM users")).scalar_one()
    assert name == "John Doe"


def test_import_all_valid_exits_0_and_writes_audit_events(cli: Cli, engine: Engine) -> None:
    lines = "\n".join(json.dumps(user) for user in (JOHN, MALIKA))
    result = cli("--actor", "alice", "users", "import", "-", "--format", "jsonl", input=lines)

    assert result.exit_code == 0, result.stderr
    with engine.connect() as connection:
        events = connection.execute(
            text("SELECT actor, action, entity, entity_id, details FROM audit_events ORDER BY id")
        ).all()
    assert [tuple(event[:4]) for event in events] == [
        ("alice", "user.created", "user", "usr-001"),
        ("alice", "user.created", "user", "usr-002"),
    ]
    assert events[0][4] == {"source": "import"}


def test_add_records_the_os_user_as_actor(cli: Cli, engine: Engine) -> None:
    from bnplctl.config import os_actor

    cli(*add_args(JOHN))
    result = cli("audit", "list", "--entity", "user", "-o", "json")

    assert result.exit_code == 0
    (event,) = json.loads(result.stdout)
    assert (event["actor"], event["action"], event["entity_id"]) == (
        os_actor(),
        "user.created",
        "usr-001",
    )
    assert event["details"] == {"source": "add"}


def test_import_missing_file_exits_66(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    result = cli("users", "import", str(tmp_path / "nope.csv"))

    assert result.exit_code == 66
    assert "no such file" in result.stderr


def test_import_unparsable_file_exits_65_naming_the_line(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    broken = tmp_path / "users.json"
    broken.write_text('[\n  {"user_id": "usr-001"},\n  {"user_id": \n]')
    result = cli("users", "import", str(broken))

    assert result.exit_code == 65
    assert "line 4" in result.stderr
    assert row_counts(engine)["users"] == 0


def test_import_csv_missing_columns_exits_65(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("user_id,name\nusr-001,John\n")
    result = cli("users", "import", str(source))

    assert result.exit_code == 65
    assert "line 1: missing column(s): phone, passport, card, dob" in result.stderr


def test_list_filters_limits_and_formats(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    for user in (JOHN, MALIKA, TIMUR):
        cli(*add_args(user))
    with engine.begin() as connection:
        connection.execute(text("UPDATE users SET status = 'DEBT_USER' WHERE user_id = 'usr-002'"))

    debt = json.loads(cli("users", "list", "--status", "DEBT_USER", "-o", "json").stdout)
    assert [user["user_id"] for user in debt] == ["usr-002"]

    limited = cli("users", "list", "--limit", "2", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(line)["user_id"] for line in limited] == ["usr-001", "usr-002"]

    table = list(csv.DictReader(cli("users", "list", "-o", "csv").stdout.splitlines()))
    assert [row["card_number"] for row in table] == [
        "4111 **** **** 1111",
        "5555 **** **** 4444",
        "3782 **** **** 0005",
    ]

    human = cli("users", "list").stdout
    assert "Malika Karimova" in human and "+998****1234" in human


def test_show_includes_the_debt_summary(cli: Cli, engine: Engine) -> None:
    cli(*add_args(JOHN))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO plans (user_id, total_amount, installment_count, start_date) "
                "VALUES ('usr-001', 300.00, 3, '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO installments "
                "(plan_id, user_id, sequence, original_amount, amount_due, due_date, status,"
                " overdue_since) "
                "VALUES (1, 'usr-001', 1, 100, 100, '2026-02-01', 'OVERDUE', '2026-02-02'),"
                " (1, 'usr-001', 2, 100, 100, '2026-03-01', 'UPCOMING', NULL)"
            )
        )
    shown = json.loads(cli("users", "show", "usr-001", "-o", "json").stdout)

    assert shown["phone_number"] == "+998****4567"
    assert (shown["plans_active"], shown["plans_completed"]) == (1, 0)
    assert (shown["outstanding_amount"], shown["total_debt"]) == ("200.00", "100.00")
    assert shown["overdue_installments"] == 1


def test_show_unknown_user_exits_4(cli: Cli, engine: Engine) -> None:
    result = cli("users", "show", "usr-404")

    assert result.exit_code == 4
    assert result.stderr.strip() == "error: user usr-404 not found"


def test_import_of_several_chunks_uses_workers_and_keeps_file_order(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 12_000)  # three chunks of up to 5,000
    lines = source.read_text().splitlines()
    lines[5_001] = lines[5_001].replace("+99890", "99890")  # invalid phone, second chunk
    lines[9_000] = lines[3]  # a duplicate of line 4, in the second chunk
    lines[11_999] = lines[11_999].rsplit(",", 1)[0] + ",2020-01-01"  # a minor, third chunk
    source.write_text("\n".join(lines) + "\n")
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["created"], summary["duplicate"], summary["invalid"]) == (
        12_000,
        11_997,
        1,
        2,
    )
    assert [(r["line"], r["outcome"]) for r in summary["rejected"]] == [
        (5_002, "invalid"),
        (9_001, "duplicate"),
        (12_000, "invalid"),
    ]
    with engine.connect() as connection:
        users, audits = connection.execute(
            text("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM audit_events)")
        ).one()
    assert (users, audits) == (11_997, 11_997)


def test_import_chunks_after_a_duplicate_fall_back_and_recover(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    # A chunk of new users takes a plain INSERT; one duplicate makes that chunk start
    # over with ON CONFLICT (to a savepoint, after its COPY) and so does the next chunk;
    # a clean chunk switches back. Every outcome must be the same as one row at a time.
    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 20_000)  # four chunks of 5,000
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    passport, user_id = header.index("passport"), header.index("user_id")

    def with_field(line: str, column: int, value: str) -> str:
        fields = line.split(",")
        fields[column] = value
        return ",".join(fields)

    # Second chunk: line 6,002's passport is line 6,001's (same chunk).
    lines[6_001] = with_field(lines[6_001], passport, lines[6_000].split(",")[passport])
    # Fourth chunk: line 19,000 reuses the user_id of line 2 (first chunk).
    lines[18_999] = with_field(lines[18_999], user_id, lines[1].split(",")[user_id])
    source.write_text("\n".join(lines) + "\n")
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["duplicate"]) == (19_998, 2)
    assert [(r["line"], r["outcome"], r["reason"]) for r in summary["rejected"]] == [
        (6_002, "duplicate", "duplicate of line 6001 (same passport)"),
        (19_000, "duplicate", "duplicate of line 2 (same user_id)"),
    ]
    with engine.connect() as connection:
        users, audits, line_2_name = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM audit_events),"
                " (SELECT full_name FROM users WHERE user_id = 'u0000000')"
            )
        ).one()
    assert (users, audits) == (19_998, 19_998)
    assert line_2_name == "Bench User A"  # line 2's user, untouched by line 19,000


def test_import_dry_run_reports_the_real_outcomes_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    from bench.run import write_users

    assert cli(*add_args(JOHN)).exit_code == 0
    source = tmp_path / "many.csv"
    write_users(source, 12_000)  # three chunks: the worker path, one transaction
    lines = source.read_text().splitlines()
    lines[5_001] = lines[5_001].replace("+99890", "99890")  # invalid phone, second chunk
    lines[9_000] = lines[3]  # a duplicate of line 4, in a later chunk
    lines.append(",".join(JOHN[k] for k in ("user_id", "name", "phone", "passport", "card", "dob")))
    source.write_text("\n".join(lines) + "\n")
    before = row_counts(engine)

    dry = cli("users", "import", str(source), "--dry-run", "-o", "json")

    assert dry.exit_code == 5, dry.stderr
    assert row_counts(engine) == before
    planned = json.loads(dry.stdout)
    real = cli("users", "import", str(source), "-o", "json")
    applied = json.loads(real.stdout)
    assert (planned.pop("dry_run"), applied.pop("dry_run")) == (True, False)
    assert planned == applied
    assert (applied["created"], applied["duplicate"], applied["invalid"]) == (11_998, 2, 1)
    assert [(r["line"], r["outcome"]) for r in applied["rejected"]] == [
        (5_002, "invalid"),
        (9_001, "duplicate"),
        (12_002, "duplicate"),
    ]
    assert row_counts(engine)["users"] == before["users"] + 11_998


def test_import_dry_run_of_one_chunk_says_so_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(SAMPLE_CSV)
    before = row_counts(engine)

    result = cli("users", "import", str(source), "--dry-run")

    assert result.exit_code == 5
    # The title on one line of its own, unpadded, however narrow the table below it.
    assert result.stdout.splitlines()[0] == "Users import (dry run: nothing written)"
    assert row_counts(engine) == before
    assert cli("users", "import", str(source)).exit_code == 5
    assert row_counts(engine)["users"] == before["users"] + 3


def test_import_rows_with_control_characters_are_invalid_the_rest_applied(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    # PostgreSQL cannot store NUL in text: such a row must be an invalid row, not a
    # failed chunk; other control characters are never part of a name either.
    as_json = [dict(JOHN, name="Jo\u0000hn"), MALIKA]
    result = cli("users", "import", "-", "-o", "json", input=json.dumps(as_json))

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (1, 1)
    assert summary["rejected"][0]["reason"] == "name: must not contain control characters"

    source = tmp_path / "users.csv"
    source.write_text(
        "user_id,name,phone,passport,card,dob\n"
        "usr-003,Ti\x00mur,+998971112233,AC1112223,378282246310005,1999-02-28\n"
        "usr-004,Bell\x07,+998971112234,AC1112224,378282246310005,1999-02-28\n"
    )
    result = cli("users", "import", str(source), "-o", "json")
    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (0, 2)
    assert [row[0] for row in _users(engine)] == ["usr-002"]


def test_import_with_a_progress_bar_reads_the_file_the_same(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a terminal a large file is read through a byte-counting reader that drives a
    # progress bar (no refresh thread: the workers are forked while it is shown).
    from bench.run import write_users
    from bnplctl.cli import batch, output

    advanced: list[int] = []
    real = output.byte_progress

    def counting(total: int | None, label: str) -> Any:
        @contextmanager
        def wrapped() -> Iterator[Any]:
            with real(total, label) as advance:
                assert advance is not None

                def counted(count: int) -> None:
                    advanced.append(count)
                    advance(count)

                yield counted

        return wrapped()

    monkeypatch.setattr(batch, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(output, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(output, "byte_progress", counting)
    source = tmp_path / "many.csv"
    write_users(source, 11_000)  # three chunks, prepared by the workers
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 11_000
    assert sum(advanced) == source.stat().st_size
    assert row_counts(engine)["users"] == 11_000


# Characters that no column can hold (NUL, lone surrogates) or that no name has.
TROUBLE = ["\x00", "\ud800", "\udfff", "\x07", "\x1b", "\n", "\u2028", "\ufeff"]
_ANY_TEXT = st.lists(
    st.one_of(
        st.sampled_from(TROUBLE),
        st.sampled_from(["é", "😀", "'", '"', ",", "\\", " "]),
        st.characters(categories=("L", "N", "P", "S", "Z", "C")),
    ),
    max_size=12,
).map("".join)


@pytest.mark.parametrize("field", sorted(JOHN))
def test_troublesome_characters_in_any_user_field_make_an_invalid_row(
    cli: Cli, engine: Engine, field: str
) -> None:
    rows = [{**JOHN, field: f"A{char}1"} for char in TROUBLE] + [MALIKA]
    result = cli("users", "import", "-", "-o", "json", input=json.dumps(rows))

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    outcomes = (summary["created"], summary["duplicate"], summary["invalid"])
    if field == "name":
        # A byte-order mark is no control character (it is shown escaped): that name is
        # John's; a line separator is refused as a line break is.
        assert outcomes == (2, 0, 7)
        assert [row[0] for row in _users(engine)] == ["usr-001", "usr-002"]
    else:
        assert outcomes == (1, 0, len(TROUBLE))
        assert [row[0] for row in _users(engine)] == ["usr-002"]


def test_rows_of_a_json_array_on_one_line_keep_their_own_outcomes(cli: Cli, engine: Engine) -> None:
    # Every row of a minified JSON array is on line 1: outcomes follow the rows, not the
    # line numbers they share.
    rows = [JOHN, dict(MALIKA, user_id=JOHN["user_id"]), MALIKA, dict(TIMUR, passport="AA1234567")]
    result = cli("users", "import", "-", "-o", "json", input=json.dumps(rows))

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["duplicate"]) == (2, 2)
    assert [(r["line"], r["user_id"], r["reason"]) for r in summary["rejected"]] == [
        (1, "usr-001", "duplicate of line 1 (same user_id)"),
        (1, "usr-003", "duplicate of line 1 (same passport)"),
    ]
    assert [row[0] for row in _users(engine)] == ["usr-001", "usr-002"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(sorted(JOHN)), _ANY_TEXT)
def test_any_text_in_any_user_field_gets_a_row_outcome_never_a_crash(
    cli: Cli, field: str, value: str
) -> None:
    result = cli("users", "import", "-", "-o", "json", input=json.dumps([{**JOHN, field: value}]))

    assert result.exit_code in (0, 5), result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 1
    assert summary["created"] + summary["duplicate"] + summary["invalid"] == 1


def test_names_that_look_like_markup_are_shown_as_they_are(cli: Cli, engine: Engine) -> None:
    # Rich would read "[/bold]" as a closing tag and fail after the user was written,
    # and "[red]…[/red]" as a colour: tables show data literally.
    for user_id, name in (("usr-010", "Ann [/bold] Lee"), ("usr-011", "Bob [red]Red[/red]")):
        result = cli(
            *add_args(dict(JOHN, user_id=user_id, name=name, passport=f"AB{user_id[-3:]}999"))
        )
        assert result.exit_code == 0, result.stderr
        assert name in result.stdout
    shown = cli("users", "list")
    assert "Ann [/bold] Lee" in shown.stdout and "Bob [red]Red[/red]" in shown.stdout


def test_control_characters_reach_no_terminal(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    # An escape sequence in a file or an argument is shown escaped: in the error line,
    # in the rejects table and in the rejects file.
    missing = cli("users", "show", "usr-\x1b[31m")
    assert missing.exit_code == 4
    assert "\x1b" not in missing.stderr and "usr-\\x1b[31m" in missing.stderr

    rejects = tmp_path / "rejects.csv"
    row = dict(JOHN, user_id="u\x1b[2J")
    result = cli("users", "import", "-", "--rejects", str(rejects), input=json.dumps([row]))
    assert result.exit_code == 5
    assert "\x1b" not in result.stderr and "u\\x1b[2J" in result.stderr
    assert "\x1b" not in rejects.read_text() and "u\\x1b[2J" in rejects.read_text()


def test_an_unwritable_rejects_file_is_refused_before_any_row_is_applied(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    rejects = tmp_path / "missing-dir" / "rejects.csv"
    result = cli("users", "import", "-", "--rejects", str(rejects), input=json.dumps([JOHN]))

    assert result.exit_code == 74  # the output cannot be written
    assert "cannot write the rejects file" in result.stderr
    assert row_counts(engine)["users"] == 0


def test_a_bad_line_midway_says_what_was_created_before_it(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunks inserted before a line that cannot be read stay; the operator is told
    how many rows that was, and the rejects file gets their rejected rows."""
    from bench.run import USER_FIELDS, user_row

    cli.chunks(users=2)
    rows = [dict(zip(USER_FIELDS, user_row(n), strict=True)) for n in range(40)]
    rows[3]["dob"] = "2020-01-01"  # too young: rejected, in a committed chunk
    source = tmp_path / "cut.json"
    source.write_text("[" + "".join(json.dumps(row) + ",\n" for row in rows) + "{oops}]")
    rejects = tmp_path / "rejects.csv"

    result = cli("users", "import", str(source), "--rejects", str(rejects))

    assert result.exit_code == 65
    assert "line 41" in result.stderr
    created = row_counts(engine)["users"]
    assert created > 0  # chunks were read ahead and inserted before the fault
    assert len(result.stderr.strip().splitlines()) == 1
    stays = f"; {created + 1} row(s) of this run's finished chunks stay handled"
    assert f"{stays} ({created} created, 1 not)" in result.stderr
    with rejects.open() as handle:
        assert [row["user_id"] for row in csv.DictReader(handle)] == ["u0000003"]


# --- batch results that point at real rows (issue 24, section 5) -----------------------

_NO_IDS_CSV = (
    "user_id,name,phone,passport,card,dob\n"
    "usr-001,John Doe,+998901234567,AA1234567,4111111111111111,1990-05-20\n"
    ",Malika Karimova,+998935551234,AB7654321,5555555555554444,1985-11-02\n"
    ",Bad Card,+998901110000,AD0000001,4111111111111112,1990-01-01\n"
    ",Timur Rashidov,+998971112233,AC1112223,378282246310005,1999-02-28\n"
)
_RAW_VALUES = ("AB7654321", "AC1112223", "5555555555554444", "378282246310005", "935551234")


def _names_by_id(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT user_id, full_name FROM users")).all())


def test_import_lists_every_created_user_with_its_line_in_json(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(_NO_IDS_CSV)
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["created"], summary["invalid"]) == (4, 3, 1)
    created = summary["created_users"]
    assert [entry["line"] for entry in created] == [2, 3, 5]
    names = _names_by_id(engine)
    # Each id is a real row, the one made from that line.
    assert [names[entry["user_id"]] for entry in created] == [
        "John Doe",
        "Malika Karimova",
        "Timur Rashidov",
    ]
    assert created[0]["user_id"] == "usr-001"
    assert all(entry["user_id"].startswith("usr-") for entry in created)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_import_in_row_formats_gives_each_line_its_outcome_and_user(
    cli: Cli, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(_NO_IDS_CSV)
    result = cli("users", "import", str(source), "-o", fmt)

    assert result.exit_code == 5, result.stderr
    if fmt == "jsonl":
        records = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        records = list(csv.DictReader(result.stdout.splitlines()))
    assert [(str(r["line"]), r["outcome"]) for r in records] == [
        ("2", "created"),
        ("3", "created"),
        ("4", "invalid"),
        ("5", "created"),
    ]
    names = _names_by_id(engine)
    assert [names[r["user_id"]] for r in records if r["outcome"] == "created"] == [
        "John Doe",
        "Malika Karimova",
        "Timur Rashidov",
    ]
    assert records[2]["reason"] == "card: fails the Luhn check"
    assert not any(raw in result.stdout + result.stderr for raw in _RAW_VALUES)


def test_import_as_a_table_shows_the_created_users_on_stderr(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(_NO_IDS_CSV)
    result = cli("users", "import", str(source))

    assert result.exit_code == 5
    for user_id in _names_by_id(engine):
        assert user_id in result.stderr


def test_a_reimported_row_names_the_stored_user_it_duplicates(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(_NO_IDS_CSV)
    first = json.loads(cli("users", "import", str(source), "-o", "json").stdout)
    by_line = {entry["line"]: entry["user_id"] for entry in first["created_users"]}
    before = row_counts(engine)
    again = cli("users", "import", str(source), "-o", "json")

    assert again.exit_code == 5
    summary = json.loads(again.stdout)
    assert summary["created_users"] == []
    duplicates = [r for r in summary["rejected"] if r["outcome"] == "duplicate"]
    assert [(r["line"], r["user_id"], r["reason"]) for r in duplicates] == [
        (2, "usr-001", "duplicate of user usr-001 (same user_id)"),
        # No id in the file: no made-up id in the key; the reason names the stored user.
        (3, "", f"duplicate of user {by_line[3]} (same passport)"),
        (5, "", f"duplicate of user {by_line[5]} (same passport)"),
    ]
    assert row_counts(engine) == before
    assert not any(raw in again.stdout + again.stderr for raw in _RAW_VALUES)


def test_a_duplicate_of_an_earlier_line_names_that_line_across_chunks(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    from bench.run import write_users

    source = tmp_path / "many.csv"
    write_users(source, 12_000)  # three chunks of up to 5,000: the worker pool
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    passport, user_id = header.index("passport"), header.index("user_id")

    def with_field(line: str, column: int, value: str) -> str:
        fields = line.split(",")
        fields[column] = value
        return ",".join(fields)

    lines[3] = with_field(lines[3], user_id, "")  # line 4: an id generated
    lines[9_000] = with_field(lines[9_000], passport, lines[3].split(",")[passport])
    lines[9_001] = with_field(lines[9_001], user_id, lines[1].split(",")[user_id])
    lines[9_002] = with_field(lines[9_002], passport, lines[8_999].split(",")[passport])
    source.write_text("\n".join(lines) + "\n")
    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert [(r["line"], r["reason"]) for r in summary["rejected"]] == [
        (9_001, "duplicate of line 4 (same passport)"),
        (9_002, "duplicate of line 2 (same user_id)"),
        (9_003, "duplicate of line 9000 (same passport)"),
    ]
    created = summary["created_users"]
    assert len(created) == summary["created"] == 11_997
    generated = [entry for entry in created if entry["line"] == 4]
    assert generated and generated[0]["user_id"] in _names_by_id(engine)


def test_a_dry_run_lists_the_rows_it_would_create_without_made_up_ids(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(_NO_IDS_CSV + _NO_IDS_CSV.splitlines(keepends=True)[2])  # line 6 = line 3
    result = cli("users", "import", str(source), "--dry-run", "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    # Ids given in the file are shown; an id the run would have generated names nothing.
    assert summary["created_users"] == [
        {"line": 2, "user_id": "usr-001"},
        {"line": 3, "user_id": None},
        {"line": 5, "user_id": None},
    ]
    assert [(r["line"], r["reason"]) for r in summary["rejected"]] == [
        (4, "card: fails the Luhn check"),
        (6, "duplicate of line 3 (same passport)"),
    ]
    assert row_counts(engine)["users"] == 0


# --- memory that stays flat however many rows are rejected (issue 28) -------------------


def test_json_lists_the_first_rejected_rows_and_the_rejects_file_every_one(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for webhook and payment files: the report keeps the first rows rejected (JSON
    carries them), the counts count them all and --rejects gets every one, written as
    their chunks are done, so a file of a million bad rows takes no more memory than a
    file of a thousand."""
    from bench.run import USER_FIELDS, user_row
    from bnplctl.importing import batch

    cli.chunks(users=3)
    monkeypatch.setattr(batch, "SHOWN_REJECTS", 4)
    rows = [dict(zip(USER_FIELDS, user_row(n), strict=True)) for n in range(20)]
    for row in rows[::2]:
        row["dob"] = "2020-01-01"  # too young
    source = tmp_path / "users.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    rejects = tmp_path / "rejects.csv"

    result = cli("users", "import", str(source), "--rejects", str(rejects), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["created"], summary["invalid"]) == (20, 10, 10)
    assert [r["line"] for r in summary["rejected"]] == [1, 3, 5, 7]  # the first four
    with rejects.open() as handle:
        assert [int(r["line"]) for r in csv.DictReader(handle)] == list(range(1, 21, 2))
    assert row_counts(engine)["users"] == 10


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_row_outcomes_stream_in_file_order_and_stop_with_the_last_committed_chunk(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """-o jsonl/csv writes each row's outcome once its chunk is committed, in file order
    (created, duplicate and invalid rows interleaved): a run stopped by a fault midway
    has still said what became of every row it committed."""
    from bench.run import USER_FIELDS, user_row

    cli.chunks(users=2)
    rows = [dict(zip(USER_FIELDS, user_row(n), strict=True)) for n in range(40)]
    rows[3]["dob"] = "2020-01-01"  # invalid
    rows[6]["user_id"] = rows[1]["user_id"]  # a duplicate of line 2, in a later chunk
    source = tmp_path / "cut.json"
    source.write_text("[" + "".join(json.dumps(row) + ",\n" for row in rows) + "{oops}]")

    result = cli("users", "import", str(source), "-o", fmt)

    assert result.exit_code == 65
    if fmt == "jsonl":
        records = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        records = list(csv.DictReader(result.stdout.splitlines()))
    created = row_counts(engine)["users"]
    assert len(records) == created + 2  # every committed row, and only those
    assert [int(r["line"]) for r in records] == list(range(1, len(records) + 1))
    assert (records[3]["outcome"], records[6]["outcome"]) == ("invalid", "duplicate")
    assert records[6]["reason"] == "duplicate of line 2 (same user_id)"
    names = _names_by_id(engine)
    assert {r["user_id"] for r in records if r["outcome"] == "created"} == set(names)


# --- several files, the batch pipeline of every file command (issue 25, item 4) ----------

_SECOND_FILE_ROWS = [
    # line 1: a new user
    {**TIMUR, "user_id": "usr-010", "passport": "AE1234567", "card": "6011111111111117"},
    # line 2: the user id of the first file's line 2
    {**MALIKA, "user_id": "usr-001", "passport": "AF1234567"},
    # line 3: the passport of the first file's line 3
    {**JOHN, "user_id": "usr-011", "passport": MALIKA["passport"]},
    # line 4: the user id of this file's line 1
    {**JOHN, "user_id": "usr-010", "passport": "AG1234567"},
]


def _two_files(tmp_path: Path) -> tuple[str, str]:
    first, second = tmp_path / "first.csv", tmp_path / "second.jsonl"
    first.write_text(SAMPLE_CSV)
    second.write_text("".join(json.dumps(row) + "\n" for row in _SECOND_FILE_ROWS))
    return str(first), str(second)


def test_import_of_several_files_counts_each_and_names_the_file_of_a_duplicate(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    first, second = _two_files(tmp_path)
    rejects = tmp_path / "rejects.csv"
    result = cli("users", "import", first, second, "--rejects", str(rejects), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    counts = ("rows", "created", "duplicate", "invalid")
    assert [summary[name] for name in counts] == [9, 4, 3, 2]
    assert [(f["file"], *(f[name] for name in counts)) for f in summary["files"]] == [
        (first, 5, 3, 0, 2),
        (second, 4, 1, 3, 0),
    ]
    assert all(len(f["sha256"]) == 64 for f in summary["files"])
    assert [(r["file"], r["line"], r["outcome"], r["reason"]) for r in summary["rejected"]] == [
        (first, 5, "invalid", "card: fails the Luhn check"),
        (first, 6, "invalid", "dob: the user must be at least 18 years old"),
        (second, 2, "duplicate", f"duplicate of {first} line 2 (same user_id)"),
        (second, 3, "duplicate", f"duplicate of {first} line 3 (same passport)"),
        (second, 4, "duplicate", "duplicate of line 1 (same user_id)"),
    ]
    assert summary["created_users"] == [
        {"file": first, "line": 2, "user_id": "usr-001"},
        {"file": first, "line": 3, "user_id": "usr-002"},
        {"file": first, "line": 4, "user_id": "usr-003"},
        {"file": second, "line": 1, "user_id": "usr-010"},
    ]
    with rejects.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"], r["line"], r["user_id"], r["reason"]) for r in rows[2:]] == [
        (second, "2", "usr-001", f"duplicate of {first} line 2 (same user_id)"),
        (second, "3", "usr-011", f"duplicate of {first} line 3 (same passport)"),
        (second, "4", "usr-010", "duplicate of line 1 (same user_id)"),
    ]
    assert [row[0] for row in _users(engine)] == ["usr-001", "usr-002", "usr-003", "usr-010"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_row_outcomes_of_several_files_name_their_file(
    cli: Cli, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    first, second = _two_files(tmp_path)
    result = cli("users", "import", first, second, "-o", fmt)

    assert result.exit_code == 5, result.stderr
    if fmt == "jsonl":
        records = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        records = list(csv.DictReader(result.stdout.splitlines()))
    assert [(r["file"], str(r["line"]), r["outcome"]) for r in records] == [
        (first, "2", "created"),
        (first, "3", "created"),
        (first, "4", "created"),
        (first, "5", "invalid"),
        (first, "6", "invalid"),
        (second, "1", "created"),
        (second, "2", "duplicate"),
        (second, "3", "duplicate"),
        (second, "4", "duplicate"),
    ]
    assert records[6]["reason"] == f"duplicate of {first} line 2 (same user_id)"
    assert "9 row(s): 4 created, 3 duplicate, 2 invalid" in result.stderr


def test_a_dry_run_of_several_files_sees_the_files_before_each_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    first, second = _two_files(tmp_path)
    before = row_counts(engine)
    planned = json.loads(cli("users", "import", first, second, "--dry-run", "-o", "json").stdout)
    assert row_counts(engine) == before
    applied = json.loads(cli("users", "import", first, second, "-o", "json").stdout)

    assert (planned.pop("dry_run"), applied.pop("dry_run")) == (True, False)
    assert planned == applied
    assert planned["duplicate"] == 3


def test_one_file_named_twice_is_read_twice_the_second_time_as_duplicates(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(SAMPLE_CSV)
    result = cli("users", "import", str(source), str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["created"], summary["duplicate"]) == (10, 3, 3)
    assert [r["reason"] for r in summary["rejected"] if r["outcome"] == "duplicate"] == [
        f"duplicate of {source} line {line} (same user_id)" for line in (2, 3, 4)
    ]


def test_a_missing_second_file_is_66_before_anything_is_imported(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    first, _ = _two_files(tmp_path)
    result = cli("users", "import", first, str(tmp_path / "missing.csv"))

    assert result.exit_code == 66
    assert row_counts(engine)["users"] == 0


def test_import_users_takes_its_chunk_size_as_a_parameter(
    engine: Engine, tmp_path: Path, key_file: Path
) -> None:
    """Called as a function, with a chunk size of its own (no module constant patched):
    the report maps each created user to its file and line."""
    from bench.run import USER_FIELDS, user_row
    from bnplctl.context import ChunkSizes, Context
    from bnplctl.importing.users import import_users

    rows = [dict(zip(USER_FIELDS, user_row(n), strict=True)) for n in range(9)]
    rows[4]["dob"] = "2020-01-01"
    source = tmp_path / "users.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))

    context = Context(actor="tester", chunks=ChunkSizes(users=2))
    try:
        report = import_users([(str(source), None)], input_format="auto", context=context)
    finally:
        context.close()

    assert (report.rows, report.applied, report.rejected_total) == (9, 8, 1)
    assert [list(lines.values()) for lines in report.created] == [[1, 2, 3, 4, 6, 7, 8, 9]]
    assert row_counts(engine)["users"] == 8
