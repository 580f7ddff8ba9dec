"""Values at the edges (issue 28): ids that must not hold personal data, the phone kept
out of the server's statement log, dates at the ends of time, bidi controls, and the
split rule's message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, MALIKA, add_args


@pytest.fixture
def statement_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the server writes to its statement log for every connection bnplctl opens:
    ``log_statement=all``, its LOG lines sent to the client as well, where psycopg2
    collects them (``notices``)."""
    lines: list[str] = []

    class Collector:  # not a list: psycopg2 keeps only the last 50 lines of a list
        append = lines.append

    def collect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.notices = Collector()  # anything with append() (psycopg2 >= 2.7)

    monkeypatch.setenv("PGOPTIONS", "-c log_statement=all -c client_min_messages=log")
    event.listen(Pool, "connect", collect)
    try:
        yield lines
    finally:
        event.remove(Pool, "connect", collect)


def test_no_write_path_puts_a_phone_into_the_servers_statement_log(
    cli: Cli, tmp_path: Path, statement_log: list[str]
) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps([dict(MALIKA, user_id="usr-002")]))
    new_phone = "+998971112233"

    assert cli(*add_args(JOHN)).exit_code == 0
    assert cli("users", "import", str(users)).exit_code == 0
    updated = cli("users", "update", "usr-001", "--phone", new_phone, "--name", "John Q Doe")
    assert updated.exit_code == 0, updated.stderr
    assert cli("users", "update", "usr-002", "--phone", "+998 90 123 45 67").exit_code == 0

    logged = "".join(statement_log)
    assert "statement: " in logged and "UPDATE users" in logged  # the log is on
    for phone in (JOHN["phone"], MALIKA["phone"], new_phone):
        assert phone.lstrip("+") not in logged, phone
    shown = cli("users", "show", "usr-001", "-o", "json")
    assert json.loads(shown.stdout)["phone_number"] == "+998****2233"
    assert json.loads(shown.stdout)["full_name"] == "John Q Doe"


def test_a_split_whose_last_installment_would_be_nothing_says_the_real_rule(cli: Cli) -> None:
    # 2.76 / 24 = 0.115, rounded half-up to 0.12: 23 of them take the whole 2.76, although
    # 2.76 holds a cent for every installment (276 cents for 24 of them).
    result = cli("plans", "preview", "--amount", "2.76", "--installments", "24")

    assert result.exit_code == 65, result.stderr
    assert "the first 23 are 0.12 each" in result.stderr
    assert "leaves 0.00 for the last one" in result.stderr
    # 0.05 in 24: fewer cents than installments, the first ones would be 0.00.
    tiny = cli("plans", "preview", "--amount", "0.05", "--installments", "24")
    assert tiny.exit_code == 65 and "the first 23 would be 0.00 each" in tiny.stderr
    # 2.87 in 24: 23 of 0.12 and a last one of 0.11.
    fits = cli("plans", "preview", "--amount", "2.87", "--installments", "24", "-o", "csv")
    assert fits.exit_code == 0 and fits.stdout.count("0.12") == 23 and "0.11" in fits.stdout


def test_the_docs_state_the_split_rule_the_code_applies() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "commands.md").read_text()

    assert "too small to\ngive every installment at least one cent" not in docs
    assert "2.76 in 24" in docs


# --- item 3: a user_id never holds a card number or the user's own passport --------------

CARD_IDS = [
    "4111111111111111",
    "4111-1111-1111-1111",
    "c-5555555555554444",
    "x378282246310005y",
    # any separator a user id may hold, doubled ones, and digits of other scripts
    "4111.1111.1111.1111x",
    "4111_1111_1111_1111",
    "4111--1111--1111--1111",
]


@pytest.mark.parametrize("user_id", CARD_IDS)
def test_a_user_id_holding_a_card_number_is_refused_as_an_option(
    cli: Cli, engine: Engine, user_id: str
) -> None:
    result = cli(*add_args(dict(JOHN, user_id=user_id)))

    assert result.exit_code == 2, result.stderr
    assert "--user-id" in result.stderr and "card number" in result.stderr
    assert user_id not in result.stdout + result.stderr
    assert row_counts(engine)["users"] == 0


@pytest.mark.parametrize("user_id", ["AA1234567", "aa1234567", "usr-AA-1234567", "u.aa_123.4567"])
def test_a_user_id_holding_the_users_own_passport_is_refused(
    cli: Cli, engine: Engine, user_id: str
) -> None:
    result = cli(*add_args(dict(JOHN, user_id=user_id)))

    assert result.exit_code == 65, result.stderr
    assert "user_id: must not contain the user's passport number" in result.stderr
    assert user_id not in result.stdout + result.stderr
    assert row_counts(engine)["users"] == 0


def test_numbers_that_are_no_card_stay_valid_user_ids(cli: Cli, engine: Engine) -> None:
    # 12 digits failing the Luhn check; a passport that is not this user's.
    for user_id, passport in (("usr-411111111112", "AB1000001"), ("AA7654321", "AB1000002")):
        result = cli(*add_args(dict(JOHN, user_id=user_id, passport=passport)))
        assert result.exit_code == 0, result.stderr


def test_an_invalid_user_id_in_a_file_is_never_echoed(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    rows = [
        dict(JOHN, user_id="4111111111111111"),
        dict(JOHN, user_id="AA1234567"),  # John's own passport
        dict(JOHN, user_id="aa-1234567", card="4111111111111112"),  # and a bad card
        dict(JOHN, user_id="+998901234567"),
        dict(MALIKA, user_id="usr-002"),
    ]
    rejects = tmp_path / "rejects.csv"
    result = cli("users", "import", "-", "-o", "json", "--rejects", str(rejects),
                 input=json.dumps(rows))  # fmt: skip
    table = cli("users", "import", "-", input=json.dumps(rows[:4]))

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (1, 4)
    assert [row["user_id"] for row in summary["rejected"]] == ["<withheld>"] * 4
    everything = result.stdout + result.stderr + rejects.read_text() + table.stderr
    for raw in ("4111111111111111", "1234567", "998901234567"):
        assert raw not in everything, raw
    assert "user_id: must not contain a card number" in everything
    assert "user_id: must not contain the user's passport number" in everything


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("usr-404", "user usr-404 not found"),
        ("AA1234567", "user AA******* not found (masked: it reads as a passport)"),
        ("4111111111111111", "user <withheld> not found"),
        ("4111 1111 1111 1111", "user <withheld> not found"),
        ("+998901234567", "user <withheld> not found"),
    ],
)
def test_a_not_found_message_never_repeats_a_number_typed_as_a_user_id(
    cli: Cli, engine: Engine, typed: str, shown: str
) -> None:
    for command in (["users", "show"], ["debt", "show"], ["debt", "explain"]):
        result = cli(*command, typed)
        assert result.exit_code == 4, result.stderr
        assert result.stderr.strip() == f"error: {shown}"
    plan = cli("plans", "create", "--user", typed, "--amount", "100")
    assert plan.exit_code == 4 and shown in plan.stderr
    refund = cli("refunds", "create", "--user", typed, "--transaction-id", "T-1", "--amount", "5")
    assert refund.exit_code == 4 and shown in refund.stderr


def test_names_and_reasons_refuse_a_card_or_phone_number_written_with_spaces(
    no_database: None,
) -> None:
    from bnplctl.errors import InvalidInput
    from bnplctl.validators import free_text, person_name

    for typed in ("John 4111 1111 1111 1111", "Ann +998 90 123 45 67", "Bo 4111-1111-1111-1111"):
        with pytest.raises(InvalidInput) as refused:
            person_name(typed)
        assert "1111" not in refused.value.message and "123" not in refused.value.message
        with pytest.raises(InvalidInput):
            free_text(f"refund: {typed}", "reason")
    assert person_name("Louis 14 de Bourbon") == "Louis 14 de Bourbon"
    assert free_text("order 2026-12-01, 12.50 back", "reason") == "order 2026-12-01, 12.50 back"


def test_references_keep_a_processors_numbers(no_database: None) -> None:
    # A payment processor's or merchant's reference is theirs (Adyen's are 16 digits, one
    # in ten of them Luhn-valid): only ids bnplctl gives a person are held to the card rule.
    from bnplctl.validators import reference, required_id

    assert reference("4111111111111111", "transaction_id") == "4111111111111111"
    assert required_id("8825408195409505", "reference") == "8825408195409505"


# --- item 16: bidi controls ----------------------------------------------------------------

BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize("control", BIDI)
def test_a_bidi_control_in_a_name_is_refused(cli: Cli, engine: Engine, control: str) -> None:
    added = cli(*add_args(dict(JOHN, name=f"Ann{control}eeL")))
    assert added.exit_code == 65, added.stderr
    assert "name: must not contain bidirectional control characters" in added.stderr
    assert control not in added.stdout + added.stderr

    assert cli(*add_args(JOHN)).exit_code == 0
    renamed = cli("users", "update", "usr-001", "--name", f"Ann{control}eeL")
    assert renamed.exit_code == 65 and control not in renamed.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["plans", "create", "--user", "u-1", "--amount", "5", "--idempotency-key", "k\u202e1"],
         "--idempotency-key"),
        (["plans", "create", "--user", "u-1", "--amount", "5", "--merchant-reference", "M\u2066"],
         "--merchant-reference"),
        (["refunds", "create", "--user", "u-1", "--transaction-id", "T\u202e", "--amount", "5"],
         "--transaction-id"),
        (["refunds", "create", "--user", "u-1", "--transaction-id", "T", "--amount", "5",
          "--reason", "late\u202e"], "--reason"),
        (["--actor", "ops\u202e", "users", "list"], "--actor"),
        (["installments", "pay", "1", "--reference", "P\u2067"], "--reference"),
    ],
)  # fmt: skip
def test_a_bidi_control_in_an_id_reference_or_key_option_is_a_usage_error(
    cli: Cli, engine: Engine, args: list[str], option: str
) -> None:
    result = cli(*args)

    assert result.exit_code == 2, result.stderr
    assert option in result.stderr
    assert not any(char in result.stderr for char in BIDI)


def test_joiners_stay_allowed_in_names(cli: Cli, engine: Engine) -> None:
    name = "Mehr\u200cnoush Ra\u200dvi"  # zero-width non-joiner and joiner
    result = cli(*add_args(dict(JOHN, name=name)), "-o", "json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["full_name"] == name
    assert name in cli("users", "list").stdout  # shown as spelled


def test_bidi_controls_in_a_files_names_and_references_make_invalid_rows(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.csv"
    users = [dict(JOHN, name="Ann\u202eeeL"), dict(MALIKA, user_id="usr-\u2066002")]
    result = cli("users", "import", "-", "-o", "json", "--rejects", str(rejects),
                 input=json.dumps(users))  # fmt: skip
    assert result.exit_code == 5, result.stderr
    assert json.loads(result.stdout)["invalid"] == 2
    everything = result.stdout + result.stderr + rejects.read_text()
    assert "\u202e" not in everything and "\u2066" not in everything

    hooks = tmp_path / "hooks.jsonl"
    hooks.write_text(
        json.dumps({"refund_id": "R-1", "status": "approved", "merchant_reference": "M\u202e1"})
        + "\n"
        + json.dumps({"refund_id": "R\u202e2", "status": "approved"})
        + "\n"
    )
    ingested = cli("webhooks", "ingest", str(hooks), "-o", "json")
    assert ingested.exit_code == 5, ingested.stderr
    assert json.loads(ingested.stdout)["invalid"] == 2
    assert "\u202e" not in ingested.stdout + ingested.stderr


def test_format_characters_from_input_are_shown_escaped(cli: Cli, engine: Engine) -> None:
    # Stored before names were checked (or by SQL): tables and messages show them escaped.
    assert cli(*add_args(JOHN)).exit_code == 0
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE users SET full_name = :name"),
            {"name": "Ann\u202eeeL\u200b\ufeff Mehr\u200cnoush"},
        )

    for fmt in ("table", "wide"):
        shown = cli("users", "list", "-o", fmt)
        assert shown.exit_code == 0, shown.stderr
        assert "Ann\\u202eeeL\\u200b\\ufeff" in shown.stdout
        assert "Mehr\u200cnoush" in shown.stdout  # a joiner belongs to the spelling
    missing = cli("users", "show", "usr-\u202e1")
    assert missing.exit_code == 4 and "usr-\\u202e1" in missing.stderr
    assert "\u202e" not in missing.stderr


def test_printable_escapes_every_format_character_but_the_joiners(no_database: None) -> None:
    from bnplctl.validators import printable

    assert printable("a\u202eb\u2069c\u200ed\u00ade\u2060f") == (
        "a\\u202eb\\u2069c\\u200ed\\xade\\u2060f"
    )
    assert printable("x\u200cy\u200dz") == "x\u200cy\u200dz"
    assert printable("plain é ü 名前") == "plain é ü 名前"


# --- item 5: dates at the ends of time ------------------------------------------------------


@pytest.mark.parametrize(
    ("paid_at", "reason"),
    [
        ("9999-12-31T23:59:59Z", "paid_at: must be from 2000-01-01 to 2100-12-31"),
        ("0001-01-01T00:00:00Z", "paid_at: must be from 2000-01-01 to 2100-12-31"),
        ("1999-12-31T23:59:59Z", "paid_at: must be from 2000-01-01 to 2100-12-31"),
        ("2100-12-31T23:00:00-05:00", "paid_at: must be from 2000-01-01 to 2100-12-31"),
        ("2090-01-01T00:00:00Z", "paid_at: must be no later than a day from now"),
    ],
)
def test_a_payments_paid_at_outside_its_window_is_invalid(
    cli: Cli, engine: Engine, paid_at: str, reason: str
) -> None:
    from datetime import date

    from tests.test_sweep import seed

    seed(engine, 1, date(2026, 1, 1))
    rows = [
        {"reference": "P-1", "amount": "10", "installment_id": 1, "paid_at": paid_at},
        {"reference": "P-2", "amount": "10", "installment_id": 1, "paid_at": "2026-01-02T10:00Z"},
    ]
    result = cli("payments", "import", "-", "--format", "jsonl", "-o", "json",
                 input="".join(json.dumps(row) + "\n" for row in rows))  # fmt: skip

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["applied"], summary["invalid"]) == (1, 1)
    assert reason in result.stdout


@pytest.mark.parametrize(
    "occurred_at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+00:00", "2101-01-01T00:00:00"]
)
def test_a_webhooks_occurred_at_outside_the_window_is_invalid(
    cli: Cli, engine: Engine, occurred_at: str
) -> None:
    row = {"refund_id": "R-1", "status": "approved", "occurred_at": occurred_at}
    result = cli("webhooks", "ingest", "-", "--format", "jsonl", "-o", "json",
                 input=json.dumps(row) + "\n")  # fmt: skip

    assert result.exit_code == 5, result.stderr
    assert json.loads(result.stdout)["invalid"] == 1
    assert "occurred_at: must be from 2000-01-01 to 2100-12-31" in result.stdout


def test_a_date_of_birth_lies_between_1900_and_18_years_ago(cli: Cli, engine: Engine) -> None:
    rows = [dict(JOHN, dob="1899-12-31"), dict(MALIKA, dob="1900-01-01")]
    result = cli("users", "import", "-", "-o", "json", input=json.dumps(rows))

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (1, 1)
    assert "dob: is before 1900" in result.stdout


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tashkent", "Pacific/Kiritimati", "America/Adak"])
def test_stored_dates_at_the_ends_of_time_never_make_a_listing_fail(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    from datetime import date

    from tests.helpers import run_sweep
    from tests.test_sweep import seed

    seed(engine, 1, date(2026, 1, 1))
    assert cli("installments", "pay", "1", "2").exit_code == 0
    run_sweep(as_of=date(2026, 3, 15), dry_run=False, actor="t")
    with engine.begin() as connection:  # as a restore, another tool or an old bug left them
        for statement in (
            "UPDATE payments SET paid_at = '9999-12-31 23:59:59.999999+00' WHERE id = 1",
            "UPDATE payments SET paid_at = '0001-01-01 00:00:00+00' WHERE id = 2",
            "UPDATE installments SET paid_at = '9999-12-31 23:59:59+00', due_date = '0001-01-01'"
            " WHERE id = 1",
            "UPDATE installments SET paid_at = '0001-01-01 00:00:00+00', due_date = '9999-12-31'"
            " WHERE id = 2",
            "UPDATE installments SET due_date = '0001-01-01', overdue_since = '0001-01-01'"
            " WHERE id = 3",
            "UPDATE plans SET start_date = '0001-01-01', created_at = '0001-01-01 00:00+00',"
            " updated_at = '9999-12-31 23:59:59+00'",
            "UPDATE users SET created_at = '9999-12-31 23:59:59+00'",
        ):
            connection.execute(text(statement))
    monkeypatch.setenv("BNPL_TIMEZONE", zone)

    for args in (
        ["payments", "list"],
        ["payments", "list", "--since", "2000-01-01"],
        ["installments", "list"],
        ["installments", "list", "--due-before", "2100-12-31"],
        ["plans", "list"],
        ["plans", "show", "1"],
        ["users", "list"],
        ["users", "show", "u-1"],
        ["debt", "show", "u-1"],
        ["debt", "explain", "u-1"],
        ["debt", "report", "--as-of", "2026-03-15"],
        ["debt", "report", "--as-of", "2026-03-15", "--html", str(tmp_path / "r.html")],
    ):
        for fmt in ("table", "json", "csv"):
            result = cli(*args, "-o", fmt)
            assert result.exit_code == 0, (args, fmt, result.stderr)
    shown = cli("payments", "list", "-o", "wide").stdout
    assert "9999-12-31" in shown and "0001-01-01" in shown
    assert "Portfolio report" in (tmp_path / "r.html").read_text()


def test_a_rejects_file_shows_a_file_name_with_format_characters_escaped(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks\u202eldc.jsonl"
    hooks.write_text(json.dumps({"refund_id": "R-1", "status": "sideways"}) + "\n")
    rejects = tmp_path / "rejects.csv"

    result = cli("webhooks", "ingest", str(hooks), "--rejects", str(rejects))

    assert result.exit_code == 5, result.stderr
    written = rejects.read_text()
    assert "hooks\\u202eldc.jsonl" in written and "\u202e" not in written
    assert "\u202e" not in result.stderr


def test_a_server_session_in_another_time_zone_cannot_make_a_stored_date_fail(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (or role) whose TimeZone is ahead of UTC would hand psycopg2 9999-12-31
    23:59 UTC as year 10000: bnplctl's sessions read time in UTC, and the operator's own
    PGOPTIONS are kept."""
    from datetime import date

    from tests.test_sweep import seed

    seed(engine, 1, date(2026, 1, 1))
    assert cli("installments", "pay", "1").exit_code == 0
    with engine.begin() as connection:
        connection.execute(text("UPDATE payments SET paid_at = '9999-12-31 23:59:59+00'"))
    monkeypatch.setenv("PGOPTIONS", "-c TimeZone=Pacific/Kiritimati -c work_mem=8MB")
    listed = cli("payments", "list", "-o", "json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["paid_at"].startswith("9999-12-31T23:59:59")
    assert cli("debt", "show", "u-1", "-o", "json").exit_code == 0  # the raw read path too


# --- after the attacker pass: separators, other scripts, withheld before truncation ----


@pytest.mark.parametrize(
    "text",
    [
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111  1111  1111  1111",
        "4111/1111/1111/1111",
        "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11"
        "\uff11\uff11\uff11\uff11",  # full-width digits
        "\u0664\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 "
        "\u0661\u0661\u0661\u0661",  # Arabic-Indic digits
    ],
)
def test_a_card_number_however_written_is_found(no_database: None, text: str) -> None:
    from bnplctl.errors import InvalidInput
    from bnplctl.validators import WITHHELD, free_text, holds_card_number, person_name, shown_id

    assert holds_card_number(text)
    assert shown_id(text) == WITHHELD
    with pytest.raises(InvalidInput):
        person_name(f"John {text}")
    with pytest.raises(InvalidInput):
        free_text(f"card {text}", "reason")


def test_an_id_is_withheld_before_it_is_cut_and_a_phone_without_its_plus_too(
    no_database: None,
) -> None:
    from bnplctl.validators import WITHHELD, shown_id

    assert shown_id("x" * 90 + "4111111111111111") == WITHHELD
    assert shown_id("x" * 95 + "AE1230025", "AE1230025") == WITHHELD
    assert shown_id("998901230009") == WITHHELD
    assert shown_id("99890-123-0029") == WITHHELD
    assert shown_id("usr-000123") == "usr-000123"


def test_line_and_paragraph_separators_are_shown_escaped_and_refused_in_names(
    no_database: None,
) -> None:
    from bnplctl.errors import InvalidInput
    from bnplctl.validators import person_name, printable

    assert printable("Ann\u2028Lee\u2029") == "Ann\\u2028Lee\\u2029"
    with pytest.raises(InvalidInput):
        person_name("Ann\u2028Lee")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_no_json_make_the_row_invalid(
    cli: Cli, engine: Engine, constant: str
) -> None:
    line = f'{{"reference": {constant}, "user_id": "u-1", "amount": "1.00"}}\n'
    result = cli("payments", "import", "-", "--format", "jsonl", "-o", "json", input=line)
    assert result.exit_code == 5, result.stderr
    assert json.loads(result.stdout)["invalid"] == 1


@pytest.mark.parametrize("amount", ["1.000", "1.0000000", "1.50000"])
def test_an_amount_written_with_more_than_two_decimals_is_refused_even_as_zeros(
    no_database: None, amount: str
) -> None:
    from bnplctl.errors import InvalidInput
    from bnplctl.money import parse_amount

    with pytest.raises(InvalidInput) as refused:
        parse_amount(amount)
    assert "at most 2 decimal places" in refused.value.message
    assert parse_amount("1.5") == parse_amount("1.50")


@pytest.mark.parametrize(
    ("paid_at", "valid"),
    [
        ("2026-12-01T10:00:00Z", True),
        ("2026-12-01 10:00", True),
        ("2026-12-01", True),
        ("2026-12-01T10:00:00.5+05:00", True),
        ("20261201T100000Z", False),  # the basic format
        ("2026-W49-1", False),  # a week date
        ("2026-12-01T10Z", False),  # hours alone
        ("2026-12-01T10:00:00+05:00:30", False),  # an offset with seconds
        ("2026-12-01T10:00:00.123456789Z", False),  # nanoseconds
    ],
)
def test_a_files_timestamp_is_the_extended_iso_form_only(
    cli: Cli, engine: Engine, paid_at: str, valid: bool
) -> None:
    from datetime import date

    from tests.test_sweep import seed

    seed(engine, 1, date(2026, 1, 1))
    row = {"reference": "P-1", "amount": "10", "installment_id": 1, "paid_at": paid_at}
    result = cli("payments", "import", "-", "--format", "jsonl", "-o", "json",
                 input=json.dumps(row) + "\n")  # fmt: skip
    summary = json.loads(result.stdout)
    assert (summary["applied"], summary["invalid"]) == ((1, 0) if valid else (0, 1)), paid_at
    hook = {"refund_id": "R-1", "status": "processing", "occurred_at": paid_at}
    ingested = cli("webhooks", "ingest", "-", "--format", "jsonl", "-o", "json",
                   input=json.dumps(hook) + "\n")  # fmt: skip
    assert (json.loads(ingested.stdout)["invalid"] == 0) == valid, paid_at
