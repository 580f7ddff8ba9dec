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
