"""Option values: a malformed one is a usage error (exit 2) naming the option, before
anything is read or written; and every option's help says what it takes (``DATE``,
``AMOUNT``, ``PATH``), never the parameter's name."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args

_USER = ["--user", "usr-001"]
_REFUND = ["refunds", "create", *_USER, "--transaction-id", "REF-9", "--amount", "10"]
_PLAN = ["plans", "create", *_USER, "--amount", "100.00"]

# (command line, the option it must name); each value is malformed on its own.
MALFORMED = [
    (["debt", "sweep", "--as-of", "2026/12/01"], "--as-of"),
    (["debt", "sweep", "--as-of", "2026-02-30", "--dry-run"], "--as-of"),
    (["debt", "sweep", "--as-of", "1999-12-31", "--dry-run"], "--as-of"),
    (["debt", "report", "--as-of", "20261201"], "--as-of"),
    (["plans", "preview", "--amount", "12.345"], "--amount"),
    (["plans", "preview", "--amount", "-5"], "--amount"),
    (["plans", "preview", "--amount", "0"], "--amount"),
    (["plans", "preview", "--amount", "100", "--start", "01/02/2026"], "--start"),
    (["plans", "preview", "--amount", "100", "--start", "1999-12-31"], "--start"),
    (["plans", "preview", "--amount", "100", "--start", "2101-01-01"], "--start"),
    (["plans", "preview", "--amount", "100", "--installments", "25"], "--installments"),
    ([*_PLAN[:4], "--amount", "1e3"], "--amount"),
    ([*_PLAN, "--merchant-reference", "M" * 101], "--merchant-reference"),
    ([*_PLAN, "--idempotency-key", "order\x0742"], "--idempotency-key"),
    (["plans", "create", "--user", "usr\x1b[2J", "--amount", "100"], "--user"),
    (["plans", "list", "--user", "u" * 101], "--user"),
    (["installments", "pay", "1", "--amount", "1_000"], "--amount"),
    (["installments", "pay", "1", "--amount", "5", "--reference", "TRX\x07"], "--reference"),
    (["installments", "list", "--due-before", "2026-1-1"], "--due-before"),
    (["installments", "list", "--due-after", "tomorrow"], "--due-after"),
    ([*_REFUND[:6], "--amount", "12.345"], "--amount"),
    ([*_REFUND[:4], "--transaction-id", " ", "--amount", "10"], "--transaction-id"),
    ([*_REFUND[:4], "--transaction-id", "REF\x1b[2J", "--amount", "10"], "--transaction-id"),
    (["refunds", "list", "--user", "usr\x00"], "--user"),
    (["payments", "list", "--since", "yesterday"], "--since"),
    (["audit", "list", "--since", "2026/11/01"], "--since"),
    (["audit", "list", "--since", "1970-01-01"], "--since"),
    (["audit", "list", "--user", "x" * 101], "--user"),
    (add_args(dict(JOHN, dob="20-05-1990")), "--dob"),
    (add_args(dict(JOHN, dob="2015-06-01")), "--dob"),  # a minor
    (add_args(dict(JOHN, user_id="usr 001!")), "--user-id"),
]


@pytest.mark.parametrize(("args", "option"), MALFORMED, ids=[" ".join(a[:3]) for a, _ in MALFORMED])
def test_a_malformed_option_value_is_a_usage_error_naming_the_option(
    cli: Cli, engine: Engine, args: list[str], option: str
) -> None:
    before = row_counts(engine)
    result = cli(*args)

    assert result.exit_code == 2, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert result.stdout == ""
    assert row_counts(engine) == before


def test_a_rows_malformed_value_in_a_file_stays_invalid_input(cli: Cli, engine: Engine) -> None:
    # 65 stays for rows in files and on standard input.
    result = cli("users", "import", "-", "--format", "jsonl", input='{"user_id": "u1"}\n[1]\n')
    assert result.exit_code == 5
    broken = cli("users", "import", "-", "--format", "json", input='[{"user_id": ')
    assert broken.exit_code == 65


def test_the_message_names_the_rule_and_never_echoes_a_control_character(cli: Cli) -> None:
    result = cli("refunds", "create", *_USER, "--transaction-id", "REF\x1b[2J", "--amount", "10")
    assert result.exit_code == 2
    assert "must be printable text" in result.stderr
    assert "\x1b" not in result.stderr


def test_well_formed_values_still_reach_the_command(cli: Cli, engine: Engine) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    preview = cli("plans", "preview", "--amount", "500", "--start", "2026-01-31", "-o", "json")
    assert preview.exit_code == 0, preview.stderr
    assert '"total_amount": "500.00"' in preview.stdout
    created = cli(*_PLAN, "--start", "2026-01-31", "--merchant-reference", "ORDER-1")
    assert created.exit_code == 0, created.stderr
    listed = cli("installments", "list", "--due-after", "2026-01-31", "--due-before", "2026-03-01")
    assert listed.exit_code == 0, listed.stderr
    assert cli("audit", "list", "--since", "2026-01-01T09:00+05:00").exit_code == 0
    assert cli("payments", "list", "--since", "2026-01-01").exit_code == 0


# What an option's value is called in --help: what it takes, never the parameter's name
# (``--as-of AS_OF``); a choice shows its choices.
VALUE_WORDS = {
    "DATE", "WHEN", "AMOUNT", "PATH", "N", "FIELD", "TEXT", "NAME", "PHONE", "PASSPORT",
    "CARD", "USER_ID", "PLAN_ID", "RUN_ID", "KEY", "REFERENCE", "TRANSACTION_ID", "ID",
    "FILE|-", "KEY=VALUE", "FIELD=COLUMN",
}  # fmt: skip
EXPECTED_WORDS = {
    "--as-of": "DATE", "--start": "DATE", "--due-before": "DATE", "--due-after": "DATE",
    "--dob": "DATE", "--since": "WHEN", "--amount": "AMOUNT", "--rejects": "PATH",
    "--html": "PATH", "--user": "USER_ID", "--user-id": "USER_ID", "--plan": "PLAN_ID",
    "--installments": "N", "--transaction-id": "TRANSACTION_ID", "--reference": "REFERENCE",
    "--merchant-reference": "REFERENCE", "--idempotency-key": "KEY",
}  # fmt: skip


def test_every_option_value_is_named_for_what_it_takes(no_database: None) -> None:
    from tests.helpers import command_tree

    wrong = []
    for name, command in command_tree().items():
        for param in command.params:  # type: ignore[attr-defined]
            if param.param_type_name != "option" or param.is_flag:
                continue
            shown = param.make_metavar(None) if param.metavar is None else param.metavar
            long_name = max(param.opts, key=len)
            if getattr(param.type, "choices", None):
                continue
            expected = EXPECTED_WORDS.get(long_name)
            if (expected and shown != expected) or shown not in VALUE_WORDS:
                wrong.append(
                    f"{name} {long_name} {shown} (expected {expected or 'a word of VALUE_WORDS'})"
                )
    assert not wrong, "\n".join(wrong)


def test_status_choices_are_the_model_enums_themselves(no_database: None) -> None:
    # One list per status: the model's enum, never a copy that can drift from it.
    import typing

    from bnplctl import models
    from tests.helpers import command_tree

    expected = {
        "users list": models.UserStatus,
        "plans list": models.PlanStatus,
        "installments list": models.InstallmentStatus,
        "refunds list": models.RefundStatus,
    }
    found = {}
    for name, command in command_tree().items():
        if any("--status" in param.opts for param in command.params):  # type: ignore[attr-defined]
            callback = command.callback  # type: ignore[attr-defined]
            hint = typing.get_type_hints(callback)["status"]
            (enum,) = [kind for kind in typing.get_args(hint) if kind is not type(None)]
            found[name] = enum
            choices = next(p for p in command.params if "--status" in p.opts).type.choices  # type: ignore[attr-defined]
            assert [str(choice) for choice in choices] == [member.value for member in enum]
    assert found == expected
