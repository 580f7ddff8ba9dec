"""The interface of PRODUCT.md: tables that fit a terminal, lists that say when they are
cut, the same fields in every format, and help a person reads (issue 14)."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine

from bnplctl.cli.app import LAZY_GROUPS, app, readable
from tests.conftest import Cli
from tests.helpers import JOHN, MALIKA, TIMUR, add_args

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_NAME = "Gulnora Abdurakhmonova-Toshkentskaya"


def at_terminal(columns: int, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``bnplctl ARGS`` in a real pseudo-terminal ``columns`` wide: its exit code and
    what it showed (colours removed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's size is set before bnplctl starts
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        command = [sys.executable, "-m", "bnplctl", *args]
        os.execve(sys.executable, command, env or dict(os.environ))  # noqa: S606
    shown = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"bnplctl {' '.join(args)} did not finish at the terminal")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), ANSI.sub("", shown.decode()).replace("\r", "")


@pytest.fixture
def ledger(cli: Cli) -> dict[str, object]:
    """Three users (one with a long name), a plan each, refunds in several states."""
    long_named = dict(MALIKA, user_id="usr-002", name=LONG_NAME)
    for user in (JOHN, long_named, TIMUR):
        assert cli(*add_args(user)).exit_code == 0
    for user_id, amount in (("usr-001", "500.00"), ("usr-002", "1200.00"), ("usr-003", "90.00")):
        created = cli("plans", "create", "--user", user_id, "--amount", amount, "-o", "json")
        assert created.exit_code == 0, created.output
    refunds = [
        ("REF-000001", "usr-001", "75.50", "1"),
        ("REF-000002", "usr-002", "1234.56", None),
        ("REF-000003", "usr-003", "15.00", None),
    ]
    for reference, user_id, amount, plan in refunds:
        args = ["refunds", "create", "--user", user_id, "--transaction-id", reference]
        args += ["--amount", amount] + (["--plan", plan] if plan else [])
        assert cli(*args, "--reason", "goods returned by the customer").exit_code == 0
    assert cli("refunds", "approve", "REF-000001").exit_code == 0
    assert cli("refunds", "reject", "REF-000002").exit_code == 0
    listed = json.loads(cli("refunds", "list", "-o", "json").output)
    return {"refunds": listed}


def test_refunds_at_80_columns_keep_every_key_value_whole(ledger: dict[str, object]) -> None:
    code, shown = at_terminal(80, "refunds", "list")
    assert code == 0
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80, shown
    for refund in ledger["refunds"]:  # type: ignore[attr-defined]
        row = next(line for line in lines if refund["transaction_id"] in line)
        assert refund["status"] in row and refund["amount"] in row and refund["user_id"] in row
    assert "-o wide" in shown  # it says that columns were left out, and how to see them


def test_a_wide_terminal_shows_more_columns_and_wide_shows_them_all(
    ledger: dict[str, object],
) -> None:
    def header(*args: str, columns: int = 80) -> str:
        _, shown = at_terminal(columns, "refunds", "list", *args)
        return next(line for line in shown.splitlines() if "transaction_id" in line)

    assert "processed_at" not in header() and "processed_at" in header(columns=160)
    everything = header("-o", "wide")
    assert "created_at" in everything and "merchant_reference" in everything


def test_users_at_80_columns_keep_ids_statuses_and_dates(ledger: dict[str, object]) -> None:
    code, shown = at_terminal(80, "users", "list")
    assert code == 0
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80
    for user_id, status in (("usr-001", "NORMAL"), ("usr-002", "NORMAL"), ("usr-003", "NORMAL")):
        assert any(user_id in line and status in line for line in lines)


def test_timestamps_read_in_the_business_time_zone_to_the_minute(
    ledger: dict[str, object],
) -> None:
    env = dict(os.environ, BNPL_TIMEZONE="Asia/Tashkent")
    _, shown = at_terminal(160, "refunds", "show", "REF-000001", env=env)
    refund = ledger["refunds"][0]  # type: ignore[index]
    created = datetime.fromisoformat(refund["created_at"]).astimezone(ZoneInfo("Asia/Tashkent"))
    assert created.strftime("%Y-%m-%d %H:%M") in shown
    assert refund["created_at"] not in shown  # the raw ISO form is for programs


def test_money_is_right_aligned_under_a_currency_label(ledger: dict[str, object]) -> None:
    env = dict(os.environ, BNPL_CURRENCY="uzs")
    _, shown = at_terminal(160, "refunds", "list", env=env)
    assert "amount (UZS)" in shown
    cells = [line.split("│") for line in shown.splitlines() if "REF-00000" in line]
    header = next(line for line in shown.splitlines() if "amount (UZS)" in line)
    column = [part.strip() for part in re.split("[┃│]", header)].index("amount (UZS)")
    amounts = [cell[column] for cell in cells]
    assert {amount.strip() for amount in amounts} == {"75.50", "1234.56", "15.00"}
    assert all(amount.endswith(" ") and not amount.endswith("  ") for amount in amounts)
    assert len({len(amount.rstrip()) for amount in amounts}) == 1  # the digits line up


def test_a_currency_that_is_not_an_iso_code_is_a_configuration_error(cli: Cli) -> None:
    env = dict(os.environ, BNPL_CURRENCY="so'm")
    done = subprocess.run(
        [sys.executable, "-m", "bnplctl", "users", "list"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 78
    assert "BNPL_CURRENCY" in done.stderr


# --- lists ---------------------------------------------------------------------------------


def test_a_cut_list_says_so_on_stderr_in_every_format(cli: Cli, ledger: dict[str, object]) -> None:
    for fmt in ("table", "json", "csv"):
        done = subprocess.run(
            [sys.executable, "-m", "bnplctl", "refunds", "list", "--limit", "2", "-o", fmt],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0
        assert "showing 2 of 3; use --all or --limit" in done.stderr
        assert "REF-000003" not in done.stdout
    whole = cli("refunds", "list", "--all", "-o", "csv")
    assert "showing" not in whole.output
    assert len(list(csv.DictReader(io.StringIO(whole.stdout)))) == 3


def test_sort_orders_by_a_field_either_way(cli: Cli, ledger: dict[str, object]) -> None:
    descending = json.loads(cli("refunds", "list", "--sort", "-amount", "-o", "json").stdout)
    assert [r["amount"] for r in descending] == ["1234.56", "75.50", "15.00"]
    ascending = json.loads(cli("refunds", "list", "--sort", "amount", "-o", "json").stdout)
    assert [r["amount"] for r in ascending] == ["15.00", "75.50", "1234.56"]
    names = json.loads(cli("users", "list", "--sort", "-full_name", "-o", "json").stdout)
    assert [u["full_name"] for u in names] == sorted((u["full_name"] for u in names), reverse=True)


@pytest.mark.parametrize(
    "args",
    [
        ("refunds", "list", "--sort", "passport"),
        ("users", "list", "--all", "--limit", "5"),
        ("plans", "list", "--limit", "0"),
        ("audit", "list", "--entity", "users"),
    ],
)
def test_list_options_out_of_place_are_usage_errors(
    cli: Cli, ledger: dict[str, object], args: tuple[str, ...]
) -> None:
    done = cli(*args)
    assert done.exit_code == 2
    assert "Value error" not in done.output


def test_users_search_by_id_prefix_name_or_phone_digits(
    cli: Cli, ledger: dict[str, object]
) -> None:
    def found(text: str) -> list[str]:
        result = cli("users", "list", "--search", text, "-o", "json")
        return [user["user_id"] for user in json.loads(result.stdout)]

    assert found("usr-00") == ["usr-001", "usr-002", "usr-003"]
    assert found("abdurakh") == ["usr-002"]  # any case, inside the name
    assert found(MALIKA["phone"][-4:]) == ["usr-002"]
    assert found("4567") == ["usr-001"]
    assert found("%") == []  # a wildcard is a character like any other


def test_installments_list_filters_and_carries_every_field(
    cli: Cli, ledger: dict[str, object]
) -> None:
    johns = json.loads(cli("installments", "list", "--user", "usr-001", "-o", "json").stdout)
    assert len(johns) == 3 and {i["user_id"] for i in johns} == {"usr-001"}
    assert [i["due_date"] for i in johns] == sorted(i["due_date"] for i in johns)
    table = cli("installments", "list", "--user", "usr-001", "-o", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    assert list(rows[0]) == list(johns[0])
    paid = cli("installments", "pay", str(johns[0]["id"]))
    assert paid.exit_code == 0
    unpaid = cli("installments", "list", "--user", "usr-001", "--status", "UPCOMING", "-o", "json")
    assert [i["id"] for i in json.loads(unpaid.stdout)] == [i["id"] for i in johns[1:]]


# --- the same fields in every format ---------------------------------------------------


@pytest.mark.parametrize("entity", ["users", "refunds", "installments"])
def test_csv_carries_the_fields_of_json(cli: Cli, ledger: dict[str, object], entity: str) -> None:
    as_json = json.loads(cli(entity, "list", "-o", "json").stdout)
    header = next(csv.reader(io.StringIO(cli(entity, "list", "-o", "csv").stdout)))
    assert set().union(*(record.keys() for record in as_json)) == set(header)


def test_batch_summaries_in_csv_are_one_row_of_counts(
    cli: Cli, ledger: dict[str, object], tmp_path: object
) -> None:
    from pathlib import Path

    source = Path(str(tmp_path)) / "updates.csv"
    source.write_text("refund_id,status\nREF-000003,approved\nREF-404,approved\nREF-1,bogus\n")
    done = cli("webhooks", "ingest", str(source), "-o", "csv")
    assert done.exit_code == 5
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 1
    assert {k: rows[0][k] for k in ("rows", "applied", "unknown_refund", "invalid")} == {
        "rows": "3",
        "applied": "1",
        "unknown_refund": "1",
        "invalid": "1",
    }
    assert all("[" not in value and "{" not in value for value in rows[0].values())


def test_users_import_in_csv_is_one_row_per_line_of_the_file(cli: Cli, tmp_path: object) -> None:
    # The exception: the ids of the users it created, which a summary cannot carry.
    from pathlib import Path

    from tests.helpers import SAMPLE_CSV

    source = Path(str(tmp_path)) / "users.csv"
    source.write_text(SAMPLE_CSV)
    done = cli("users", "import", str(source), "-o", "csv")
    assert done.exit_code == 5
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(row["line"], row["user_id"], row["outcome"]) for row in rows] == [
        ("2", "usr-001", "created"),
        ("3", "usr-002", "created"),
        ("4", "usr-003", "created"),
        ("5", "usr-004", "invalid"),
        ("6", "usr-005", "invalid"),
    ]
    assert "5 row(s): 3 created, 0 duplicate, 2 invalid" in done.stderr


def test_webhook_files_show_their_checksum_in_every_format(
    cli: Cli, ledger: dict[str, object], tmp_path: object
) -> None:
    import hashlib
    from pathlib import Path

    day1 = Path(str(tmp_path)) / "day1.csv"
    day2 = Path(str(tmp_path)) / "day2.csv"
    day1.write_text("refund_id,status\nREF-000003,approved\nREF-404,approved\n")
    day2.write_text("refund_id,status\nREF-000002,bogus\n")
    ingested = cli("webhooks", "ingest", str(day1), str(day2), "-o", "json")
    assert ingested.exit_code == 5
    summary = json.loads(ingested.stdout)
    assert [(r["file"], r["line"], r["outcome"]) for r in summary["rejected"]] == [
        (str(day1), 3, "unknown_refund"),
        (str(day2), 2, "invalid"),
    ]
    digest = hashlib.sha256(day1.read_bytes()).hexdigest()
    for fmt in ("json", "csv"):
        assert digest in cli("webhooks", "files", "-o", fmt).stdout
    _, shown = at_terminal(80, "webhooks", "files", "-o", "wide")
    assert digest in shown.replace("\n", "")
    records = list(csv.DictReader(io.StringIO(cli("webhooks", "files", "-o", "csv").stdout)))
    assert {r["applied"] for r in records} == {"1", "0"}  # a count per column, not folded


def test_rejects_at_80_columns_keep_the_line_the_key_and_the_outcome(
    cli: Cli, tmp_path: object
) -> None:
    """A processor's long reference: the reason may go, the key folds rather than
    pushes the outcome off the table, and no hint points at -o wide (which changes
    nothing on stderr)."""
    from pathlib import Path

    reference = "SETTLEMENT-2026-12-03-" + "0123456789" * 5
    source = Path(str(tmp_path)) / "settlement.csv"
    source.write_text(f"reference,amount,user_id\n{reference},10.00,nobody\n")
    code, shown = at_terminal(80, "payments", "import", str(source))

    assert code == 5
    assert max(len(line) for line in shown.splitlines()) <= 80, shown
    assert "reference" in shown and "unknown_user" in shown and "outcome" in shown
    cells = [line.split("│")[2].strip() for line in shown.splitlines() if line.count("│") == 4]
    assert reference in "".join(cells[-2:])  # folded over two lines, whole
    assert "-o wide" not in shown


def test_rejects_of_several_files_say_which_file(
    cli: Cli, ledger: dict[str, object], tmp_path: object
) -> None:
    from pathlib import Path

    day1 = Path(str(tmp_path)) / "day1.csv"
    day2 = Path(str(tmp_path)) / "day2.csv"
    day1.write_text("refund_id,status\nREF-404,approved\n")
    day2.write_text("refund_id,status\nREF-405,approved\n")
    done = cli("webhooks", "ingest", str(day1), str(day2))
    assert done.exit_code == 5
    assert "day1.csv" in done.stderr and "day2.csv" in done.stderr


# --- help --------------------------------------------------------------------------------

PYTHON_IN_HELP = re.compile(
    r"<(str|int|float|bool|path|list\[\w+\]|int range)>|<=x|x>=|\bNoneType\b"
)


def _all_commands() -> list[tuple[list[str], object]]:
    import typer

    root = typer.main.get_command(app)
    found: list[tuple[list[str], object]] = []
    for name in root.list_commands(None):  # type: ignore[attr-defined]
        group = root.get_command(None, name)  # type: ignore[attr-defined]
        subs = getattr(group, "commands", None)
        if subs is None:
            found.append(([name], group))
        for sub_name, sub in (subs or {}).items():
            found.append(([name, sub_name], readable(sub)))
    return found


def test_help_names_values_in_words_never_python_types(cli: Cli) -> None:
    for path, _ in _all_commands():
        shown = cli(*path, "--help").stdout
        assert not PYTHON_IN_HELP.search(shown), (path, PYTHON_IN_HELP.search(shown))


def test_every_example_in_help_is_whole_and_parses(cli: Cli) -> None:
    """Each ``Example:`` as the help prints it (lines ending in `` \\`` go on) parses with
    the real CLI: no unknown option, no missing value, no wrong choice."""
    import shlex

    import typer
    from typer._click.exceptions import UsageError

    from bnplctl.context import Context

    root = typer.main.get_command(app)
    examples = 0
    for path, _ in [([], None), *_all_commands()]:
        shown = cli(*path, "--help").stdout
        for example in re.findall(r"Example: ((?:.*\\\n)*.*)", shown):
            words = shlex.split(example.replace("\\\n", " "))
            if words[0] != "bnplctl":  # a pipeline: the bnplctl part
                words = words[words.index("bnplctl") :]
            examples += 1
            try:
                context = root.make_context(  # the root's context, as its callback builds it
                    "bnplctl", words[1:], resilient_parsing=False, obj=Context()
                )
                _leaf(root, context)
            except UsageError as exc:
                raise AssertionError(f"{example!r}: {exc.format_message()}") from None
    assert examples >= len(_all_commands())


def _leaf(root: object, context: object) -> None:
    """Parse down to the command the words name, as click would before running it."""
    command, ctx = root, context
    while getattr(command, "commands", None) is not None or hasattr(command, "get_command"):
        args = [*ctx._protected_args, *ctx.args]  # type: ignore[attr-defined]
        if not args:
            return
        name, sub, rest = command.resolve_command(ctx, args)  # type: ignore[attr-defined]
        sub_ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command, ctx = sub, sub_ctx
        if not hasattr(sub, "resolve_command"):
            return


def test_the_root_help_lines_match_each_group(cli: Cli) -> None:
    for name, (_, line) in LAZY_GROUPS.items():
        assert cli(name, "--help").stdout.split("\n\n")[1].strip().startswith(line.split(":")[0])


def test_shell_completion_is_offered(cli: Cli) -> None:
    shown = cli("--help").stdout
    assert "--install-completion" in shown and "--show-completion" in shown


# --- speed at the terminal: what the reads people wait for do not load --------------------

_LOADED = """
import sys
from bnplctl.cli.app import main
sys.argv = ["bnplctl", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    code = stop.code
heavy = [m for m in ("sqlalchemy", "sqlmodel", "pydantic", "bnplctl.models") if m in sys.modules]
sys.stderr.write("LOADED " + ",".join(heavy) + " EXIT " + str(code) + "\\n")
"""


@pytest.mark.parametrize(
    "args",
    [
        ("debt", "show", "usr-001", "-o", "json"),
        ("users", "show", "usr-001", "-o", "json"),
        ("plans", "preview", "--amount", "500.00", "--installments", "3", "-o", "json"),
    ],
)
def test_the_reads_a_terminal_waits_for_load_neither_orm_nor_pydantic(
    cli: Cli, args: tuple[str, ...]
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *args], capture_output=True, text=True, timeout=60
    )
    assert "LOADED  EXIT 0" in done.stderr, done.stderr
    assert json.loads(done.stdout)


def test_the_raw_read_path_keeps_the_exit_codes(cli: Cli, engine: object) -> None:
    """Schema behind: 78; server gone: 75; unknown user: 4 — on the psycopg2-only path."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(os.environ["BNPL_DATABASE_URL"])
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS bnpl_empty_read"))
        connection.execute(text("CREATE DATABASE bnpl_empty_read"))
    try:
        empty = url.set(database="bnpl_empty_read").render_as_string(hide_password=False)
        for database, code in ((empty, 78), ("postgresql://u@127.0.0.1:1/x", 75)):
            env = dict(os.environ, BNPL_DATABASE_URL=database)
            for command in (["debt", "show", "usr-001"], ["users", "show", "usr-001"]):
                done = subprocess.run(
                    [sys.executable, "-m", "bnplctl", *command],
                    env=env, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert done.returncode == code, (command, done.stderr)
                assert len(done.stderr.strip().splitlines()) == 1
    finally:
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS bnpl_empty_read WITH (FORCE)"))
        admin.dispose()
    for command in (["debt", "show", "nobody"], ["users", "show", "nobody"]):
        done = subprocess.run(
            [sys.executable, "-m", "bnplctl", *command], capture_output=True, text=True
        )
        assert done.returncode == 4


def test_explain_at_80_columns_shows_the_sweeps_event_with_its_date_whole(
    cli: Cli, engine: Engine
) -> None:
    """The audit details of the sweep's per-user event (from, to, run, business date)
    stay at 80 columns ("about" goes first), a date never broken inside."""
    from tests.test_sweep import seed

    seed(engine, 1, date(2026, 1, 1))
    assert cli("debt", "sweep", "--as-of", "2026-06-01").exit_code == 0
    code, shown = at_terminal(80, "debt", "explain", "u-1")
    assert code == 0, shown
    assert max(len(line) for line in shown.splitlines()) <= 80, shown
    assert "to: DEBT_USER" in shown and "from: NORMAL" in shown
    assert "2026-06-01" in shown  # the business date, whole on its line
