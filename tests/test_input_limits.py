"""Hostile files through every file command (issue 28): JSON keys named twice, JSON
numbers, integers Python will not read, and lines without end."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args
from tests.test_sweep import seed

HUGE = "9" * 5000  # Python reads integers of up to 4,300 digits


def _refund(cli: Cli) -> None:
    """REF-1 (10.00), PENDING."""
    assert cli(*add_args(JOHN)).exit_code == 0
    created = cli(
        "refunds", "create", "--user", "usr-001", "--transaction-id", "REF-1", "--amount", "10"
    )
    assert created.exit_code == 0, created.stderr


def _refund_status(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT status FROM refunds WHERE transaction_id = 'REF-1'")
            ).scalar_one()
        )


def _lines(objects: list[str], fmt: str) -> str:
    return "\n".join(objects) if fmt == "jsonl" else "[" + ",\n".join(objects) + "]"


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_webhook_row_naming_status_twice_is_invalid_and_changes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    """``{"status": "rejected", ..., "Status": "approved"}`` approved the refund."""
    _refund(cli)
    source = tmp_path / f"updates.{fmt}"
    source.write_text(
        _lines(['{"refund_id":"REF-1","status":"rejected","event_id":"E-1","Status":"approved"}'],
               fmt)
    )  # fmt: skip

    result = cli("webhooks", "ingest", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["applied"], summary["invalid"]) == (0, 1)
    assert summary["rejected"][0]["reason"] == (
        "status: the field appears twice (names are compared without case or spaces)"
    )
    assert summary["rejected"][0]["refund_id"] == "REF-1"  # the row's key, said once
    assert _refund_status(engine) == "PENDING"


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_payment_naming_amount_twice_or_as_a_loose_number_is_invalid(
    cli: Cli, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    """``"AMOUNT"`` after ``"amount"`` recorded 2.00; ``1e1`` was 10.00 and
    ``0.10000000000000001`` 0.10, though the same texts in strings are refused."""
    seed(engine, 1, date(2026, 1, 1))
    source = tmp_path / f"settlement.{fmt}"
    source.write_text(
        _lines(
            [
                '{"reference":"P-1","amount":"1.00","user_id":"u-1"," AMOUNT ":"2.00"}',
                '{"reference":"P-2","amount":1e1,"user_id":"u-1"}',
                '{"reference":"P-3","amount":0.10000000000000001,"user_id":"u-1"}',
                '{"reference":"P-4","amount":12.5,"user_id":"u-1"}',
            ],
            fmt,
        )
    )

    result = cli("payments", "import", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["applied"], summary["invalid"]) == (1, 3)
    assert summary["rejected"][0]["reference"] == "P-1"
    assert [row["reason"] for row in summary["rejected"]] == [
        "amount: the field appears twice (names are compared without case or spaces)",
        "amount: must be a number written with digits and an optional point, like 120.50",
        "amount: at most 2 decimal places",
    ]
    with engine.connect() as connection:
        recorded = connection.execute(text("SELECT reference, amount::text FROM payments")).all()
    assert [tuple(row) for row in recorded] == [("P-4", "12.50")]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_user_naming_a_field_twice_is_invalid(
    cli: Cli, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    row = {key: JOHN[key] for key in ("name", "phone", "passport", "card", "dob")}
    twice = json.dumps(row)[:-1] + ', "Phone ": "+998901111111"}'
    source = tmp_path / f"users.{fmt}"
    source.write_text(_lines([twice, json.dumps(row | {"user_id": "ok-1"})], fmt))

    result = cli("users", "import", str(source), "-o", "json")

    assert result.exit_code == 5, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["created"], summary["invalid"]) == (1, 1)
    assert summary["rejected"][0]["reason"] == (
        "phone: the field appears twice (names are compared without case or spaces)"
    )
    assert "901111" not in result.stdout + result.stderr


def _huge_int_files(tmp_path: Path, command: str, rows: list[str]) -> tuple[Path, Path]:
    """The same rows, then one with an integer of 5,000 digits, as JSON lines and as a
    JSON array (one row a line)."""
    bad = '{"reference": "X", "amount": ' + HUGE + "}"
    lines, array = tmp_path / f"{command}.jsonl", tmp_path / f"{command}.json"
    lines.write_text("\n".join([*rows, bad]) + "\n")
    array.write_text("[" + ",\n".join([*rows, bad]) + "]\n")
    return lines, array


def test_a_huge_json_integer_is_an_invalid_row_or_exit_65_with_what_stays(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An integer of more than 4,300 digits was exit 1 (Python's ``ValueError``) in all
    three importers, after committing chunks without saying so."""
    cli.chunks(payments=2)
    cli.chunks(webhooks=2)
    cli.chunks(users=2)
    payments = [f'{{"reference": "H-{n}", "amount": "1", "user_id": "u-1"}}' for n in range(4)]
    hooks = [f'{{"refund_id": "NONE-{n}", "status": "approved"}}' for n in range(4)]
    # invalid, nothing created; enough rows that chunks commit before the fault, which
    # the users import meets while it reads ahead of its workers
    users = ['{"name": "A B", "phone": "x"}' for _ in range(40)]
    for command, rows in (("users", users), ("payments", payments), ("webhooks", hooks)):
        if command == "payments":  # users made by hand, after the users import
            seed(engine, 1, date(2026, 1, 1))
        verb = {"payments": "import", "webhooks": "ingest", "users": "import"}[command]
        lines, array = _huge_int_files(tmp_path, command, rows)

        row_error = cli(command, verb, str(lines), "-o", "json")
        assert row_error.exit_code == 5, (command, row_error.stderr)
        rejected = json.loads(row_error.stdout)["rejected"]
        assert rejected[-1]["line"] == len(rows) + 1
        assert rejected[-1]["reason"] == "invalid JSON (a number of more than 4300 digits)"

        stopped = cli(command, verb, str(array))
        assert stopped.exit_code == 65, (command, stopped.stderr)
        (message,) = stopped.stderr.strip().splitlines()
        assert f"{array}: line {len(rows) + 1}: a number of more than 4300 digits" in message
        stays = "; 4 row(s)" if command != "users" else " row(s)"
        assert f"{stays} of this run's finished chunks stay handled (" in message
    assert row_counts(engine)["payments"] == 4


def _run_capped(command: list[str], stdin: int | None = None) -> tuple[int, str, str, int]:
    """``command`` (a Python one) in a process allowed 1 GiB of address space, so that an
    unbounded read fails fast instead of taking the machine: exit code, stdout, stderr
    and peak RSS in KiB. Started by a small parent of its own, which measures it: a
    process forked from pytest would count pytest's own memory (Linux keeps the peak
    across ``exec``)."""
    script = (
        "import resource, subprocess, sys\n"
        "def cap():\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "done = subprocess.run([sys.executable, *sys.argv[1:]], preexec_fn=cap,"
        " capture_output=True, text=True)\n"
        "sys.stderr.write(done.stderr)\n"
        "sys.stdout.write(done.stdout)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script, *command],
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    *output, last = done.stdout.splitlines()
    code, peak = last.split()
    return int(code), "\n".join(output), done.stderr, int(peak)


def test_a_line_without_end_stops_at_the_limit_with_flat_memory(engine: Engine) -> None:
    """``payments import /dev/zero --format jsonl`` reached 4.7 GB in 15 s."""
    command = ["-m", "bnplctl", "payments", "import", "/dev/zero", "--format", "jsonl"]
    code, _, stderr, peak_kib = _run_capped(command)
    assert code == 65, stderr
    assert "/dev/zero: line 1: longer than the limit of 1 MiB for one line or record" in stderr
    assert peak_kib < 200 * 1024
    with open("/dev/zero", "rb") as zeros:
        command = ["-m", "bnplctl", "users", "import", "-", "--format", "csv"]
        code, _, stderr, _ = _run_capped(command, zeros.fileno())
    assert code == 65, stderr
    assert "standard input: line 1: the header is longer than 64 KiB" in stderr


def test_a_large_one_line_json_array_is_read_with_flat_memory(tmp_path: Path) -> None:
    """A one-line JSON array of 120 MB (the reader held the whole document: a 200 MB one
    peaked at 513 MB) is read within the same memory as a small one."""
    source = tmp_path / "big.json"
    element = json.dumps({"refund_id": "R" * 100, "status": "approved", "pad": "p" * 400})
    count = 120 * 1024 * 1024 // (len(element) + 1)
    with source.open("w") as handle:
        handle.write("[")
        for n in range(count):
            handle.write(("," if n else "") + element)
        handle.write("]")
    script = (
        "import sys\n"
        "from bnplctl.importing.readers import read_rows\n"
        "with open(sys.argv[1], 'rb') as handle:\n"
        "    print(sum(1 for row in read_rows(handle, 'json') if row.error is None))\n"
    )
    code, rows, stderr, peak_kib = _run_capped(["-c", script, str(source)])
    assert code == 0, stderr[-500:]
    assert int(rows) == count
    assert peak_kib < 80 * 1024
