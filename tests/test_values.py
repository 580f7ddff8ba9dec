"""Values at the edges (issue 28): ids that must not hold personal data, the phone kept
out of the server's statement log, dates at the ends of time, bidi controls, and the
split rule's message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from tests.conftest import Cli
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
