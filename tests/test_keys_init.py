"""``bnplctl keys init PATH``: a new key file for an external database, never overwriting
one, never a key the database would not accept, never key material in any output."""

from __future__ import annotations

import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from typer.testing import Result

from bnplctl import crypto
from tests.conftest import Cli, DatabaseUnderTest, row_counts
from tests.helpers import JOHN, MALIKA, add_args


def _one_line(result: Result) -> str:
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def _key_check(engine: Engine) -> str | None:
    with engine.connect() as connection:
        value = connection.execute(text("SELECT key_check FROM key_checks")).scalar()
    return None if value is None else str(value)


def test_keys_init_creates_a_private_key_file_that_the_database_then_accepts(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file: mode 0600, in the format the key loader reads; the database records its
    check (not the key) and an audit event; nothing of the key reaches any output."""
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    path = tmp_path / "secrets" / "bnpl.key"
    path.parent.mkdir(mode=0o700)
    monkeypatch.setenv("BNPL_ACTOR", "ops")

    result = cli("keys", "init", str(path))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert str(path) in _one_line(result)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["bnpl.key"]  # no draft left behind
    key = crypto.read_key(path)
    assert key is not None and len(key) == crypto.KEY_BYTES
    assert _key_check(engine) == crypto.Keyring(key).key_check()
    with engine.connect() as connection:
        events = connection.execute(
            text("SELECT actor, action, entity, entity_id, details::text FROM audit_events")
        ).all()
    assert [tuple(event[:4]) for event in events] == [("ops", "key.initialized", "key", "0")]
    for shown in (result.stderr, events[0][4]):
        assert key.hex() not in shown and crypto.Keyring(key).key_check() not in shown

    audited = json.loads(cli("audit", "list", "--entity", "key", "-o", "json").stdout)
    assert [(event["action"], event["details"]) for event in audited] == [
        ("key.initialized", {"file": str(path)})
    ]

    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(path))
    assert cli(*add_args(JOHN)).exit_code == 0
    assert json.loads(cli("status", "-o", "json").stdout)["secret_key"]["state"] == "matches"


@pytest.mark.parametrize("kind", ["key file", "other file", "directory", "dangling link"])
def test_keys_init_never_overwrites_what_is_there(
    cli: Cli, engine: Engine, tmp_path: Path, key_file: Path, kind: str
) -> None:
    path = tmp_path / "bnpl.key"
    if kind == "key file":
        path.write_bytes(key_file.read_bytes())
        path.chmod(0o600)
    elif kind == "other file":
        path.write_text("not a key\n")
        path.chmod(0o644)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere.key")
    before = path.lstat()
    content = path.read_bytes() if path.is_file() else None

    result = cli("keys", "init", str(path))

    assert result.exit_code == 2
    assert f"{path} already exists" in _one_line(result)
    after = path.lstat()
    assert (after.st_mode, after.st_ino, after.st_mtime_ns) == (
        before.st_mode,
        before.st_ino,
        before.st_mtime_ns,
    )
    assert content is None or path.read_bytes() == content
    assert not (tmp_path / "nowhere.key").exists()  # the link was not followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bnpl.key"]  # nor a draft left
    assert _key_check(engine) is None


@pytest.mark.parametrize("given", ["-", "", "newdir/", "missing/dir/bnpl.key"])
def test_keys_init_refuses_a_path_it_may_not_use(cli: Cli, tmp_path: Path, given: str) -> None:
    """The key is a file, never standard output; a directory that is not there is not
    made (a typo would hide the key where nobody looks)."""
    result = cli("keys", "init", given)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "keys init" in _one_line(result)
    assert ("PATH is empty" in result.stderr) == (given == "")
    assert list(tmp_path.iterdir()) == []


def test_keys_init_refuses_a_database_that_already_has_another_key(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A new key would not match the database's key check: exit 3, no file, nothing
    written; the same for a database that holds passports from before key checks."""
    assert cli(*add_args(JOHN)).exit_code == 0  # records the session key's check
    stored = _key_check(engine)
    before = row_counts(engine)
    path = tmp_path / "new.key"

    result = cli("keys", "init", str(path))

    assert result.exit_code == 3
    assert "BNPL_SECRET_KEY_FILE" in _one_line(result)
    assert not path.exists()
    assert row_counts(engine) == before and _key_check(engine) == stored

    with engine.begin() as connection:
        connection.execute(text("DELETE FROM key_checks"))
    result = cli("keys", "init", str(path))
    assert result.exit_code == 3
    assert "passports" in _one_line(result)
    assert not path.exists()
    assert _key_check(engine) is None


def test_keys_init_twice_the_second_key_is_refused(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two operators each making a key for the same database: the first one counts."""
    first, second = tmp_path / "first.key", tmp_path / "second.key"
    assert cli("keys", "init", str(first)).exit_code == 0
    result = cli("keys", "init", str(second))
    assert result.exit_code == 3
    assert not second.exists()
    assert _key_check(engine) == crypto.Keyring(crypto.read_key(first) or b"").key_check()
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(first))
    assert cli(*add_args(MALIKA)).exit_code == 0


def test_keys_init_without_a_database_url_checks_no_database(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a key made before the server exists (a compose secret, a Docker volume): no
    database is checked or started; the first command using the key records its check."""
    monkeypatch.delenv("BNPL_DATABASE_URL")
    path = tmp_path / "bnpl.key"
    result = cli("keys", "init", str(path))
    assert result.exit_code == 0, result.stderr
    assert "no database was checked" in result.stderr
    assert crypto.read_key(path) is not None
    assert not (tmp_path / "data").exists()  # no embedded server started or set up


def test_keys_init_with_an_unreachable_database_writes_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    path = tmp_path / "bnpl.key"
    result = cli("keys", "init", str(path))
    assert result.exit_code == 75
    _one_line(result)
    assert not path.exists()


@pytest.fixture
def unmigrated(test_database: DatabaseUnderTest) -> Iterator[str]:
    name = f"bnpl_unmigrated_{secrets.token_hex(4)}"
    admin = create_engine(test_database.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(test_database.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_keys_init_on_a_database_not_migrated_says_to_upgrade_first(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unmigrated: str
) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", unmigrated)
    path = tmp_path / "bnpl.key"
    result = cli("keys", "init", str(path))
    assert result.exit_code == 78
    assert "bnplctl db upgrade" in _one_line(result)
    assert not path.exists()


def test_keys_init_help_has_an_example(cli: Cli) -> None:
    shown = cli("keys", "init", "--help").stdout
    assert "Example: bnplctl keys init" in shown
    assert "PATH" in shown


def test_keys_init_names_the_file_by_its_absolute_path(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BNPL_SECRET_KEY_FILE must name the file wherever a command runs: what keys init
    says to set is absolute, whatever PATH was given."""
    monkeypatch.delenv("BNPL_DATABASE_URL")
    (tmp_path / "secrets").mkdir()
    result = cli("keys", "init", "secrets/bnpl.key")  # the working directory is tmp_path
    assert result.exit_code == 0, result.stderr
    assert f"BNPL_SECRET_KEY_FILE={tmp_path / 'secrets' / 'bnpl.key'} " in result.stderr
