"""No raw phone, card or passport number escapes: outputs, errors, rejects, logs, the database."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import Cli, DatabaseUnderTest, pg_dump
from tests.helpers import JOHN, MALIKA, SAMPLE_CSV, TIMUR, add_args

RAW_CARDS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "4111111111111112",
    "4012888888881881",
    "6011111111111117",
]
RAW_PASSPORTS = ["AA1234567", "AB7654321", "AC1112223", "AD0000001", "AD0000002", "AE5550001"]
RAW_PHONES = ["+998901234567", "+998935551234", "+998971112233", "+998901110000", "998901110001"]


def _spaced(card: str) -> str:
    return " ".join(card[i : i + 4] for i in range(0, len(card), 4))


def test_raw_personal_data_never_leaves_the_process_in_clear(
    cli: Cli,
    test_database: DatabaseUnderTest,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    captured: list[str] = []

    def run(*args: str, input: str | None = None) -> int:
        result = cli(*args, input=input)
        captured.extend([result.stdout, result.stderr])
        return result.exit_code

    # Every onboarding path: add (prompted and with options), import CSV / JSON / stdin.
    assert run(*add_args(JOHN), "-o", "json") == 0
    prompted = [a for a in add_args(MALIKA) if a not in ("--card", MALIKA["card"])]
    assert run(*prompted, input=_spaced(MALIKA["card"]) + "\n") == 0
    users_csv = tmp_path / "users.csv"
    users_csv.write_text(SAMPLE_CSV)
    rejects = tmp_path / "rejects.csv"
    assert run("users", "import", str(users_csv), "--rejects", str(rejects)) == 5
    stdin_rows = [
        dict(TIMUR, user_id="usr-010", passport="AE5550001", card="6011111111111117"),
        dict(JOHN, user_id="usr-011", phone="998901110001"),
    ]
    assert run("users", "import", "-", "-o", "json", input=json.dumps(stdin_rows)) == 5

    # Every refusal path: invalid fields and duplicates.
    assert run(*add_args(dict(JOHN, user_id="usr-020", card="4111111111111112"))) == 65
    assert run(*add_args(dict(JOHN, user_id="usr-021", phone="998901110001"))) == 65
    assert run(*add_args(dict(JOHN, user_id="usr-022", passport="9AD0000002"))) == 65
    assert run(*add_args(dict(JOHN, user_id="usr-023"))) == 3
    assert run(*add_args(JOHN)) == 3

    # Every way of reading users back.
    for fmt in ("table", "json", "jsonl", "csv"):
        assert run("users", "list", "-o", fmt) == 0
        assert run("users", "show", "usr-001", "-o", fmt) == 0
    assert run("audit", "list", "-o", "json") == 0

    everything = "\n".join(captured) + rejects.read_text() + caplog.text
    for secret in RAW_CARDS + [_spaced(card) for card in RAW_CARDS] + RAW_PASSPORTS:
        assert secret not in everything, secret
    for phone in RAW_PHONES:
        assert phone not in everything and phone.lstrip("+") not in everything, phone
    assert "4111 **** **** 1111" in everything  # the masked form is what shows

    dump = pg_dump(test_database.url)
    assert "usr-010" in dump  # the dump does contain the users
    for secret in RAW_CARDS + RAW_PASSPORTS:
        assert secret not in dump, secret
        assert secret.encode().hex() not in dump, secret


def _users_file(path: Path, count: int) -> None:
    rows = [
        f"u-{n:05d},Name {chr(65 + n % 26)}{n % 1000},+99890{n:07d},AA{n:07d},"
        f"{luhn(f'411111{n:09d}')},1990-01-01"
        for n in range(count)
    ]
    path.write_text("user_id,name,phone,passport,card,dob\n" + "\n".join(rows) + "\n")


def luhn(stem: str) -> str:
    total = 0
    for index, digit in enumerate(reversed(stem)):
        value = int(digit) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return stem + str((10 - total % 10) % 10)


@pytest.mark.parametrize("failure", ["statement_timeout", "terminated"])
def test_a_failing_statement_shows_no_row_data_even_with_debug(
    cli: Cli,
    test_database: DatabaseUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """The import's insert, held up by a lock, then cancelled by a statement timeout or its
    backend terminated: exit 75 with one line (no DETAIL, no CONTEXT quoting a row)."""
    import threading
    import time

    from sqlalchemy import text

    source = tmp_path / "users.csv"
    _users_file(source, 50)
    # A timeout in both cases: terminated, the insert must never wait for long either.
    timeout_ms = 1500 if failure == "statement_timeout" else 20000
    monkeypatch.setenv("PGOPTIONS", f"-c statement_timeout={timeout_ms}")
    engine = test_database.engine()
    holder = engine.connect()
    holder.execute(text("LOCK TABLE users IN EXCLUSIVE MODE"))  # reads go on, inserts wait

    def terminate_the_waiting_insert() -> None:
        with engine.connect() as killer:
            for _ in range(200):
                pid = killer.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO users%'"
                    )
                ).scalar()
                killer.rollback()  # the next look sees a fresh pg_stat_activity
                if pid is not None:
                    killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=terminate_the_waiting_insert)
    if failure == "terminated":
        killer.start()
    try:
        result = cli("--debug", "users", "import", str(source))
    finally:
        if killer.is_alive() or failure == "terminated":
            killer.join()
        holder.rollback()
        holder.close()
        engine.dispose()
    assert result.exit_code == 75, result.stderr
    assert "database unavailable" in result.stderr
    shown = result.stdout + result.stderr
    for n in range(50):
        assert f"+99890{n:07d}" not in shown and f"AA{n:07d}" not in shown
        assert f"99890{n:07d}" not in shown
    for label in ("DETAIL", "CONTEXT", "HINT"):
        for line in shown.splitlines():
            if line.lstrip().startswith(f"{label}:"):
                assert "withheld" in line, line


def test_withheld_server_details_span_every_line_of_a_quoted_row() -> None:
    from bnplctl.cli.app import withhold_server_details

    traceback_text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "psycopg2.errors.QueryCanceled: canceling statement due to statement timeout\n"
        'CONTEXT:  COPY user_rows, line 1: "1,u-1,"Ann\n'
        'Lee",+998901234567,\\x01,..."\n'
        "DETAIL:  Failing row contains (AA1234567).\n"
        "HINT:  +998901234567\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
    )
    shown = withhold_server_details(traceback_text)
    assert "+998901234567" not in shown and "AA1234567" not in shown and "Lee" not in shown
    assert "QueryCanceled: canceling statement due to statement timeout" in shown
    assert "The above exception was the direct cause" in shown


def test_what_c_code_prints_of_an_error_is_silenced_in_a_command(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """psycopg2 prints the server's error (with its CONTEXT line, the copied row's phone
    number in it) through ``sys.excepthook`` when the connection dies during a COPY;
    Typer's hook printed it whole. A command replaces it: nothing reaches stderr."""
    import sys

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # put back after the test
    assert cli("plans", "preview", "--amount", "500", "-o", "json").exit_code == 0
    leak = RuntimeError('CONTEXT:  COPY user_rows, line 1: "0,u-1,"Ann",+998901234567"')
    capsys.readouterr()
    sys.excepthook(RuntimeError, leak, None)
    assert capsys.readouterr().err == ""
