"""Issue 27's second attacker pass: a key file shared by two databases, a writer queued
behind a rotation's start, what status says of passports that do not decrypt (each test
failed on 5b209cd; the expectation from docs/operations.md and the issue)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, DatabaseUnderTest, database_at_head
from tests.test_key_rotation import (  # noqa: F401 - own_key is a fixture
    flip_a_byte,
    import_users,
    own_key,
    per_key,
)


@pytest.fixture
def other_database(test_database: DatabaseUnderTest) -> Iterator[str]:
    """A second database on the same server, at head, sharing the test's key file."""
    with database_at_head(test_database.server_url, "bnpl_test_other") as url:
        yield url


def _on(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("BNPL_DATABASE_URL", url)


def test_retiring_a_key_on_one_database_never_strands_another_sharing_the_file(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    other_database: str,
    test_database: DatabaseUnderTest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two databases on one key file, both under key 0. A rotates (0 -> 1) and retires
    key 0, which A no longer needs: the shared file marks it retired, while every one of
    B's passports is under it. B goes on (its own database decides what it retired),
    and `keys status` says so; a key B never recorded cannot be retired from B."""
    a = test_database.url
    import_users(cli, tmp_path, 10)  # A
    _on(monkeypatch, other_database)
    import_users(cli, tmp_path, 10)  # B, same file, key 0
    _on(monkeypatch, a)
    assert cli("keys", "rotate").exit_code == 0  # A: 0 -> 1
    assert cli("keys", "retire", "0").exit_code == 0  # A needs key 0 no more
    _on(monkeypatch, other_database)
    verify = cli("verify", "--keys")
    assert verify.exit_code == 0, verify.stderr
    from tests.helpers import JOHN, add_args

    assert cli(*add_args(JOHN)).exit_code == 0
    status = cli("keys", "status", "-o", "json")
    assert status.exit_code == 69
    assert any("retired in the key file" in p for p in json.loads(status.stdout)["problems"])
    foreign = cli("keys", "retire", "1")  # A's key
    assert foreign.exit_code == 3 and "never this database's" in foreign.stderr
    assert cli("keys", "rotate").exit_code == 0  # B: 0 -> 2, its own key
    assert cli("keys", "retire", "0").exit_code == 0
    assert cli("keys", "status").exit_code == 0
    _on(monkeypatch, a)
    assert cli("verify", "--keys").exit_code == 0  # A: key 1, still enabled


def test_a_database_sharing_the_file_is_not_told_its_rotation_stopped_before_it_began(
    cli: Cli,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    other_database: str,
    test_database: DatabaseUnderTest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After A rotates, B (same file, never rotated) is told by `keys status`, `status`
    and a refused `keys rotate` (3) that "key 1 ... was added by a rotation stopped before
    it began": no rotation of B ever started. The operations guide says the two are
    rotated one after the other: B's `keys rotate` should work (or say the file's primary
    is another database's), not claim a stopped rotation."""
    import_users(cli, tmp_path, 5)
    _on(monkeypatch, other_database)
    import_users(cli, tmp_path, 5)
    _on(monkeypatch, test_database.url)
    assert cli("keys", "rotate").exit_code == 0
    _on(monkeypatch, other_database)
    result = cli("keys", "rotate")
    assert "stopped before it began" not in result.stderr
    assert "stopped before it began" not in cli("keys", "status").stdout


def test_keys_status_does_not_send_the_operator_to_resume_for_passports_that_cannot_decrypt(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
) -> None:
    """A rotation stopped (69) by a passport that does not decrypt: `keys status` says
    only "unfinished, 1 passport(s) left: `bnplctl keys rotate --resume`", which fails
    again with 69 for ever. It should say the passport cannot be decrypted (verify --keys,
    restore from backup), as the rotation's own error does."""
    import_users(cli, tmp_path, 10)
    flip_a_byte(engine, "u0000003")
    assert cli("keys", "rotate").exit_code == 69
    assert per_key(engine) == {0: 1, 1: 9}
    status = cli("keys", "status")
    assert status.exit_code == 69
    assert "decrypt" in status.stdout + status.stderr


def test_a_writer_queued_behind_a_rotation_start_sees_the_new_primary(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
) -> None:
    """keys.py: "A writer in flight commits under the old key first; every later one
    writes under the new key". write_state reads the primary in the same statement that
    waits for the shared keys lock, so (READ COMMITTED: the statement's snapshot is taken
    before the wait) a writer queued behind the start reads the OLD primary and no prior
    key: it writes under the old key after the rotation began, looks duplicates up under
    the old blind index only, and is missing from rows_total (seen: a rotation finishing
    at rows_done 249794 of rows_total 244794, and 444299 of 439399)."""
    import threading
    import time

    from bnplctl.services.secret_key import KEYS_LOCK_ID, write_state

    import_users(cli, tmp_path, 3)
    with engine.connect() as probe:
        before = write_state(probe)
        probe.rollback()
    starter = engine.connect()
    starter.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": KEYS_LOCK_ID})
    starter.execute(text("UPDATE key_checks SET primary_key_id = 77 WHERE id = 1"))
    seen: list[object] = []

    def writer() -> None:
        with engine.connect() as connection:
            seen.append(write_state(connection))
            connection.rollback()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)  # the writer waits for the shared lock
    starter.commit()  # the start committed: primary 77
    thread.join(10)
    starter.close()
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE key_checks SET primary_key_id = :id WHERE id = 1"), {"id": before[0]}
        )
    assert seen == [(77, None)]  # today: [(0, None)], the primary before the start
