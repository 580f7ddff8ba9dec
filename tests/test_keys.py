"""The secret key is checked against the database before anything is protected with it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bnplctl import crypto, db
from tests.conftest import TABLES, Cli, row_counts
from tests.helpers import JOHN, MALIKA, SAMPLE_CSV, add_args


def _refused(result: object, *needles: str) -> None:
    assert result.exit_code == 78, result.stderr  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "BNPL_SECRET_KEY_FILE" in stderr
    for needle in needles:
        assert needle in stderr
    assert "Traceback" not in stderr


def test_a_missing_key_file_that_is_set_is_refused_and_not_created(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "secret.key"
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(missing))
    before = row_counts(engine)
    _refused(cli(*add_args(JOHN)), "does not exist")
    users = tmp_path / "users.csv"
    users.write_text(SAMPLE_CSV)
    _refused(cli("users", "import", str(users)), "does not exist")
    assert not (tmp_path / "no").exists()  # neither the key nor its directory
    assert row_counts(engine) == before


def test_a_different_key_is_refused_before_any_write(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli(*add_args(JOHN)).exit_code == 0
    other = tmp_path / "other.key"
    crypto.create_key(other)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(other))
    before = row_counts(engine)

    _refused(cli(*add_args(MALIKA)), "is not the key this database was set up with")
    users = tmp_path / "users.csv"
    users.write_text(SAMPLE_CSV)
    _refused(cli("users", "import", str(users)))
    _refused(cli("users", "import", str(users), "--dry-run"))
    assert row_counts(engine) == before

    status = json.loads(cli("status", "-o", "json").stdout)
    assert status["secret_key"]["state"] == "mismatch"
    assert any("secret key does not match" in problem for problem in status["problems"])


def test_a_database_without_a_check_gets_one_from_the_right_key_only(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    """A database set up before key checks existed: the key must open a stored passport."""
    assert cli(*add_args(JOHN)).exit_code == 0
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM key_checks"))
    other = tmp_path / "other.key"
    crypto.create_key(other)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(other))
    _refused(cli(*add_args(MALIKA)), "is not the key this database was set up with")
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(key_file))
    assert json.loads(cli("status", "-o", "json").stdout)["secret_key"]["state"] == "unchecked"

    assert cli(*add_args(MALIKA)).exit_code == 0
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT key_check FROM key_checks")).scalar_one()
    assert stored == crypto.Keyring(crypto.read_key(key_file) or b"").key_check()
    assert stored != (crypto.read_key(key_file) or b"").hex()  # a check, never the key
    assert json.loads(cli("status", "-o", "json").stdout)["secret_key"]["state"] == "matches"


def test_a_key_readable_by_others_is_used_with_a_warning(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    shared = tmp_path / "shared.key"
    shared.write_bytes(key_file.read_bytes())
    os.chmod(shared, 0o644)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(shared))
    result = cli(*add_args(JOHN))
    assert result.exit_code == 0
    assert "can be read by group or others" in result.stderr
    assert json.loads(cli("status", "-o", "json").stdout)["secret_key"]["exposed"] is True


@pytest.mark.parametrize("content", ["", "not hex", "abcd"])
def test_status_says_an_unusable_key_file_is_unusable(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text(content)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(bad))
    report = json.loads(cli("status", "-o", "json").stdout)
    assert report["secret_key"]["state"] == "unusable"
    assert any("cannot be used" in problem for problem in report["problems"])
    _refused(cli(*add_args(JOHN)), "must hold 32 bytes as hex")


KEYS_INIT_HINT = "bnplctl keys init PATH"


def test_with_a_url_and_no_key_file_a_key_is_never_generated(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key generated beside an external database lives and dies with its container:
    exit 78 naming the variable and the command that makes a key, nothing written."""
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    users = tmp_path / "users.csv"
    users.write_text(SAMPLE_CSV)
    before = row_counts(engine)

    for args in (add_args(JOHN), ["users", "import", str(users)]):
        result = cli(*args)
        _refused(result, KEYS_INIT_HINT)
        assert result.stderr.count("\n") == 1  # one line
    assert row_counts(engine) == before  # no user, no key check
    assert not (tmp_path / "data").exists()  # neither a key nor its directory
    assert cli("users", "list").exit_code == 0  # a command without the key still works

    report = json.loads(cli("status", "-o", "json").stdout)
    assert report["secret_key"] == {
        "file": None,
        "state": "not set",
        "exposed": False,
        "keys": "no key yet",
    }


def test_with_a_url_a_key_left_in_the_data_directory_is_named_not_used(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    """An earlier version generated the key in the data directory under a URL too: the
    refusal points at it, and the operator sets the variable to it."""
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    left = tmp_path / "data" / "secret.key"
    left.parent.mkdir()
    left.write_bytes(key_file.read_bytes())
    left.chmod(0o600)
    _refused(cli(*add_args(JOHN)), KEYS_INIT_HINT, str(left))
    assert row_counts(engine)["users"] == 0
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(left))
    assert cli(*add_args(JOHN)).exit_code == 0


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The embedded database (no BNPL_DATABASE_URL, no BNPL_SECRET_KEY_FILE) in a data
    directory of the test's own; yields that directory."""
    data_dir = tmp_path / "data"
    monkeypatch.delenv("BNPL_DATABASE_URL")
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    monkeypatch.setenv("BNPL_DATA_DIR", str(data_dir))
    try:
        yield data_dir
    finally:
        db.stop_embedded(data_dir)


def _embedded_counts(data_dir: Path) -> dict[str, int]:
    engine = create_engine(db.normalize_url(db.start_embedded(data_dir)))
    try:
        return row_counts(engine)
    finally:
        engine.dispose()


def test_the_embedded_database_generates_its_key_on_first_use_and_never_again(
    cli: Cli, embedded: Path, tmp_path: Path
) -> None:
    """The one case a key is generated: the embedded database, no variable, no key seen
    yet. Once the database has seen a key, a missing file is an error, not a new key."""
    assert json.loads(cli("status", "-o", "json").stdout)["secret_key"]["state"] == "none yet"
    users = tmp_path / "users.csv"
    users.write_text(SAMPLE_CSV)
    assert cli("users", "import", str(users)).exit_code == 5  # two rows invalid on purpose
    default = embedded / "secret.key"
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    key = crypto.read_key(default)
    assert key is not None
    engine = create_engine(db.normalize_url(db.start_embedded(embedded)))
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT key_check FROM key_checks")).scalar_one()
    finally:
        engine.dispose()
    assert stored == crypto.Keyring(key).key_check()

    default.rename(tmp_path / "moved.key")
    before = _embedded_counts(embedded)
    _refused(cli(*add_args(MALIKA | {"user_id": "usr-009"})), "was set up with a secret key")
    assert not default.exists()
    # The same passport again under a fresh key: refused before it could be onboarded twice.
    _refused(cli(*add_args(JOHN | {"user_id": "usr-010"})))
    assert _embedded_counts(embedded) == before
    assert set(before) == set(TABLES)


def test_a_wrong_key_with_an_invalid_row_is_one_line_with_nothing_said_to_stay(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invalid row's chunk was never committed: nothing stays, and running the file
    again with the wrong key finishes nothing."""
    assert cli(*add_args(JOHN)).exit_code == 0
    other = tmp_path / "other.key"
    crypto.create_key(other)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(other))
    users = tmp_path / "users.csv"
    users.write_text(SAMPLE_CSV)  # two of its rows are invalid
    before = row_counts(engine)
    result = cli("users", "import", str(users))
    _refused(result, "is not the key this database was set up with")
    assert "stay" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert row_counts(engine) == before
