"""Issue 27's attacker pass (rotatable secret keys): what broke, each test written before
its fix; the expectation from PRODUCT.md's "Personal data" section or the issue."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl import crypto
from bnplctl.context import Context
from tests.conftest import Cli
from tests.helpers import JOHN, add_args
from tests.test_key_rotation import (  # noqa: F401 - own_key is a fixture
    Stopped,
    file_keys,
    flip_a_byte,
    import_users,
    insert_prepared,
    own_key,
    per_key,
    rotate,
    stop_the_start,
)


def test_retiring_the_key_a_stopped_rotation_added_never_breaks_the_key_file(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keys retire 1` after a start stopped half-way marks the file's primary key
    retired: the file then has no enabled primary, and every command needing the key is
    78 until the file is edited by hand. It must be refused (3) or leave a usable file."""
    import_users(cli, tmp_path, 30)
    stop_the_start(monkeypatch, context)
    assert file_keys(own_key).primary.key_id == 1
    cli("keys", "retire", "1")
    assert crypto.read_keyring(own_key) is not None  # ConfigError today: no enabled primary
    assert cli(*add_args(JOHN)).exit_code == 0
    assert cli("keys", "rotate", "--resume").exit_code == 0


def test_keys_status_is_unhealthy_after_a_rotation_stopped_before_it_began(
    cli: Cli,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed at any point, a rotation is unfinished until --resume: `keys status` is 69
    and says to resume (today: 0, no problem, and `keys rotate` alone is refused)."""
    import_users(cli, tmp_path, 10)
    stop_the_start(monkeypatch, context)
    result = cli("keys", "status", "-o", "json")
    assert result.exit_code == 69, result.stdout
    assert json.loads(result.stdout)["problems"]


@pytest.mark.parametrize(
    "content",
    [
        '{"format": "bnplctl-keyring", "version": 1, "keys": [{"id": 0, "primary": true,'
        f' "key": "{"11" * 32}"}}, {{"id": 1, "primary": true, "key": "{"22" * 32}"}}]}}',
        "not a key",
    ],
    ids=["two-primaries", "garbage"],
)
def test_keys_status_is_69_when_the_key_file_cannot_be_used(
    cli: Cli,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    content: str,
) -> None:
    """`keys status` is 69 "when `status` would be unhealthy for the keys"; `status`
    is unhealthy for an unusable key file, `keys status` exits 0 with no problem."""
    import_users(cli, tmp_path, 5)
    own_key.write_text(content)
    result = cli("keys", "status", "-o", "json")
    assert result.exit_code == 69, result.stdout
    assert json.loads(result.stdout)["problems"]


def test_a_deeply_nested_key_file_is_78_naming_the_variable_not_an_internal_error(
    cli: Cli,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
) -> None:
    """Under the 64 KiB limit, JSON nested 30,000 deep: RecursionError, exit 1."""
    import_users(cli, tmp_path, 5)
    own_key.write_text('{"format":' + "[" * 30000 + "]" * 30000 + "}")
    result = cli("verify", "--keys")
    assert result.exit_code == 78, result.stderr
    assert "BNPL_SECRET_KEY_FILE" in result.stderr


def test_an_import_chunk_prepared_before_a_rotation_applies_after_the_old_key_is_retired(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    context: Context,
) -> None:
    """An import's workers protect every chunk with the keyring read when it began. A
    chunk staged after the rotation finished and the old key was retired: the stage
    cannot decrypt it (ConfigError: the keyring has no key 0) and the import dies; a
    chunk staged while key 0 was still in the inserter's keyring is inserted with its
    card fingerprint under the retired key. Now: the row goes in, its passport under the
    primary key (decrypted, for that alone, under the retired key that protected it a
    moment before in this process); its card fingerprint cannot be made again (the
    number is gone) and stays under key 0, said by ``card_key_id``. Chunks read after
    the rotation began are protected under the new key from the start
    (``prepare_item`` gets the import's latest keyring with each chunk)."""
    from bnplctl.importing.readers import RawRow
    from bnplctl.importing.users import prepare_chunk

    import_users(cli, tmp_path, 20)
    old = crypto.Keyring(file_keys(own_key).usable()[0])
    raw = [
        RawRow(
            line=2,
            fields=JOHN
            | {"user_id": "late-1", "passport": "LT0000001", "phone": "+998911111111"}
            | {"card": "4111111111111111"},
            error=None,
        )
    ]
    prepared = prepare_chunk(raw, date(2026, 12, 1), old)
    assert cli("keys", "rotate").exit_code == 0
    assert cli("keys", "retire", "0").exit_code == 0
    insert_prepared(context, prepared, old)
    with engine.connect() as connection:
        card_key = connection.execute(
            text("SELECT card_key_id FROM users WHERE user_id = 'late-1'")
        ).scalar()
    assert card_key == 0
    assert per_key(engine) == {1: 21}
    assert cli("verify", "--keys").exit_code == 0


def test_two_writers_of_one_key_file_never_lose_a_key(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two databases sharing one key file, rotated at once: the file is replaced only
    while it still holds what the rotation read; the second is 75, nothing changed."""
    import_users(cli, tmp_path, 5)
    real_write = crypto.write_keyring

    def another_rotation_first(path: Path, keyring: Any, **options: Any) -> None:
        other = file_keys(path).with_new_primary(clock_now(), known=[7])
        real_write(path, other, replace=True)  # the other database's rotation, first
        real_write(path, keyring, **options)

    def clock_now() -> Any:
        from bnplctl import clock

        return clock.now()

    monkeypatch.setattr(crypto, "write_keyring", another_rotation_first)
    result = cli("keys", "rotate")
    assert result.exit_code == 75, result.stderr
    assert "changed since this command read it" in result.stderr
    monkeypatch.undo()
    assert [entry.key_id for entry in file_keys(own_key).entries] == [0, 8]  # kept
    assert per_key(engine) == {0: 5}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM key_rotations")).scalar() == 0


def test_a_passport_that_does_not_decrypt_stops_the_rotation_after_every_other_one(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
) -> None:
    import_users(cli, tmp_path, 30)
    flip_a_byte(engine, "u0000012")
    result = cli("keys", "rotate")
    assert result.exit_code == 69
    assert "1 passport(s) cannot be decrypted under the key they name (u0000012)" in (result.stderr)
    assert "restore their rows from a backup" in result.stderr
    assert per_key(engine) == {0: 1, 1: 29}
    again = cli("keys", "rotate", "--resume")
    assert again.exit_code == 69 and per_key(engine) == {0: 1, 1: 29}
    assert cli("keys", "status").exit_code == 69


def test_drafts_a_killed_writer_left_are_removed_and_dates_come_from_the_database(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
) -> None:
    import_users(cli, tmp_path, 3)
    left = own_key.with_name(f".{own_key.name}.999999999.abcd1234")
    left.write_text("a copy of the keys")
    assert cli("keys", "rotate").exit_code == 0
    assert not left.exists()
    document = json.loads(own_key.read_text())
    document["keys"][1]["created_at"] = "2099-01-01T00:00:00+00:00"  # edited by hand
    own_key.write_text(json.dumps(document))
    shown = json.loads(cli("keys", "status", "-o", "json").stdout)
    assert shown["keys"][1]["age_days"] == 0  # the database's date, not the file's


def test_the_key_file_primary_a_stopped_rotation_added_cannot_be_retired(
    cli: Cli,
    tmp_path: Path,
    own_key: Path,  # noqa: F811
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import_users(cli, tmp_path, 3)
    stop_the_start(monkeypatch, context)
    refused = cli("keys", "retire", "1")
    assert refused.exit_code == 3 and "--resume" in refused.stderr
    assert file_keys(own_key).primary.status == "enabled"
