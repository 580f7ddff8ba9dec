"""Issue 27: a keyring, key ids in every ciphertext, ``keys rotate`` online and resumable,
``keys status``, ``keys retire``, ``verify --keys``.

Each test rotates a key file of its own (``own_key``: a copy of the session's single-key
file, as an installation from before keyrings has), so that the session's stays as it is.
"""

from __future__ import annotations

import json
import random
import shutil
import stat
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.run import user_row, write_users
from bnplctl import clock, crypto
from bnplctl.context import Context
from bnplctl.errors import ConfigError, Conflict
from bnplctl.services import keys as key_service
from tests.conftest import Cli, row_counts
from tests.helpers import JOHN, add_args, unit


class Stopped(Exception):
    """Stands for a kill between two batches of a rotation."""


@pytest.fixture
def own_key(tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "secret.key"
    path.parent.mkdir()
    shutil.copy(key_file, path)
    path.chmod(0o600)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(path))
    return path


def import_users(cli: Cli, tmp_path: Path, count: int) -> None:
    users = tmp_path / "users.csv"
    write_users(users, count)
    result = cli("users", "import", str(users), "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["created"] == count


def passport_of(n: int) -> str:
    return user_row(n)[3]


def rows(engine: Engine) -> dict[str, tuple[int, bytes, str, int]]:
    """user id -> (passport key id, ciphertext, blind index, card key id)."""
    with engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT user_id, passport_key_id, passport_ciphertext, passport_blind_index,"
                " card_key_id FROM users"
            )
        ).all()
    return {row[0]: (row[1], bytes(row[2]), row[3], row[4]) for row in found}


def per_key(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT passport_key_id, count(*) FROM users GROUP BY 1")
        ).all()
    return {int(row[0]): int(row[1]) for row in found}


def file_keys(path: Path) -> crypto.KeyFile:
    found = crypto.read_keyring(path)
    assert found is not None
    return found


def rotate(context: Context, *, resume: bool = False, **options: Any) -> Any:
    return key_service.rotate(
        context.db,
        context.settings,
        resume=resume,
        actor="test",
        now=clock.now,
        **options,
    )


def stop_after(k: int) -> Any:
    def after_batch(batches: int) -> None:
        if batches == k:
            raise Stopped

    return after_batch


def stop_the_start(monkeypatch: pytest.MonkeyPatch, context: Context) -> None:
    """A `keys rotate` killed after it wrote the new key to the file, before the
    database recorded it."""

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(key_service, "_start", killed)
        with pytest.raises(Stopped):
            rotate(context)


def flip_a_byte(engine: Engine, user_id: str) -> None:
    """A passport ciphertext damaged (one bit of its sealed bytes), as a bad disk does."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE users SET passport_ciphertext = set_byte(passport_ciphertext, 20,"
                " get_byte(passport_ciphertext, 20) # 1) WHERE user_id = :id"
            ),
            {"id": user_id},
        )


def insert_prepared(context: Context, prepared: Any, keyring: crypto.Keyring) -> tuple[Any, Any]:
    """A users import's chunk, prepared under ``keyring``, staged and inserted as the
    import's pipeline does it: (the staged chunk, its duplicates)."""
    from bnplctl.importing.users import UserImportReport, _Inserter

    report = UserImportReport()
    report.names.append("late.csv")
    report.created.append({})
    inserter = _Inserter(report, context=context, source="import", keyring=keyring)
    with context.db.unit(raw=True) as work:
        staged = inserter.stage(work.dbapi, prepared)
        _, duplicates = inserter.apply(work.dbapi, staged)
    return staged, duplicates


def audit_actions(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT action, entity_id FROM audit_events WHERE entity = 'key' ORDER BY id")
        ).all()
    return [(str(row[0]), str(row[1])) for row in found]


def assert_verified(cli: Cli) -> dict[str, Any]:
    result = cli("verify", "--keys", "-o", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    [check] = [check for check in report["checks"] if check["check"] == "passport_keys"]
    assert check["violations"] == 0
    return dict(check)


def no_key_material(path: Path, *shown: str) -> None:
    keyring = file_keys(path)
    for entry in keyring.entries:
        secret = crypto.SecretKey(entry.material, entry.key_id)
        for text_shown in shown:
            assert entry.material.hex() not in text_shown
            assert secret.key_check() not in text_shown


# --- the keyring and the ciphertexts --------------------------------------------------


@pytest.mark.usefixtures("no_database")
def test_a_ciphertext_names_its_key_and_is_bound_to_its_row_and_key_id() -> None:
    first, second = crypto.new_key(), crypto.new_key()
    ring = crypto.Keyring({0: first, 1: second}, primary=1)
    sealed = ring.encrypt_passport("AA1234567", "usr-1")
    assert crypto.ciphertext_key_id(sealed) == 1 and sealed[:3] == b"\x02\x00\x01"
    assert ring.decrypt_passport(sealed, "usr-1") == "AA1234567"
    with pytest.raises(ConfigError):
        ring.decrypt_passport(sealed, "usr-2")  # copied onto another row
    relabelled = b"\x02\x00\x00" + sealed[3:]  # the same bytes, said to be key 0's
    with pytest.raises(ConfigError):
        ring.decrypt_passport(relabelled, "usr-1")
    with pytest.raises(ConfigError, match="no key 7"):
        ring.decrypt_passport(b"\x02\x00\x07" + sealed[3:], "usr-1")
    # The first format (no key id: version byte, nonce, sealed) is key 0's.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old = crypto.SecretKey(first, 0)
    nonce = b"\x00" * 12
    v1 = b"\x01" + nonce + AESGCM(old._encryption_key).encrypt(nonce, b"AB7654321", b"usr-9")
    assert crypto.ciphertext_key_id(v1) == 0
    assert ring.decrypt_passport(v1, "usr-9") == "AB7654321"
    # A blind index and a fingerprint differ by key; the prior key's is there in a rotation.
    rotating = crypto.Keyring({0: first, 1: second}, primary=1, prior=0)
    assert rotating.prior_index("AA1234567") == crypto.Keyring(first).passport_index("AA1234567")
    assert rotating.passport_index("AA1234567") != rotating.prior_index("AA1234567")
    assert set(rotating.card_fingerprints("4111111111111111")) == {0, 1}
    assert "Keyring(primary=1" in repr(rotating) and first.hex() not in repr(rotating)


@pytest.mark.usefixtures("no_database")
@pytest.mark.parametrize(
    ("document", "said"),
    [
        ({"format": "bnplctl-keyring", "version": 2, "keys": []}, "version 1"),
        ({"format": "bnplctl-keyring", "version": 1, "keys": []}, "at least one key"),
        ({"keys": [{"id": 0, "primary": True}]}, "version 1"),
        ("two primaries", "exactly one primary"),
        ("retired primary", "exactly one primary"),
        ("same id", "key id twice"),
        ("bad id", "whole number"),
        ("short key", "32 bytes"),
        ("unknown field", "unknown fields"),
        ("other purpose", "purpose"),
        ("naive time", "offset"),
    ],
)
def test_a_keyring_that_breaks_a_rule_is_78_naming_the_file_never_its_keys(
    tmp_path: Path, document: Any, said: str
) -> None:
    key = crypto.new_key().hex()

    def entry(key_id: int, **fields: Any) -> dict[str, Any]:
        return {"id": key_id, "purpose": "pii", "status": "enabled", "key": key} | fields

    documents = {
        "two primaries": [entry(0, primary=True), entry(1, primary=True)],
        "retired primary": [entry(0, primary=True, status="retired")],
        "same id": [entry(0, primary=True), entry(0)],
        "bad id": [entry(True, primary=True)],
        "short key": [entry(0, primary=True, key="abcd")],
        "unknown field": [entry(0, primary=True, secret="x")],
        "other purpose": [entry(0, primary=True, purpose="tokens")],
        "naive time": [entry(0, primary=True, created_at="2026-01-01T00:00:00")],
    }
    if isinstance(document, str):
        document = {"format": "bnplctl-keyring", "version": 1, "keys": documents[document]}
    path = tmp_path / "ring.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=said) as raised:
        crypto.read_keyring(path)
    assert str(path) in raised.value.message and key not in raised.value.message


@pytest.mark.usefixtures("no_database")
def test_a_name_given_twice_in_the_keyring_is_refused(tmp_path: Path) -> None:
    """As in every JSON input: the second ``primary`` would otherwise win silently."""
    key = crypto.new_key().hex()
    path = tmp_path / "ring.json"
    path.write_text(
        '{"format": "bnplctl-keyring", "version": 1, "keys": [{"id": 0, "key": "'
        + key
        + '", "primary": false, "primary": true}]}'
    )
    with pytest.raises(ConfigError, match="twice"):
        crypto.read_keyring(path)


# --- keys rotate ----------------------------------------------------------------------


def test_rotate_puts_every_passport_under_a_new_primary_key_and_audits_it(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, key_file: Path
) -> None:
    import_users(cli, tmp_path, 120)
    before = rows(engine)
    assert {row[0] for row in before.values()} == {0}

    result = cli("keys", "rotate")

    assert result.exit_code == 0, result.stderr
    assert "from key 0 to key 1: 120 passport(s) re-encrypted" in result.stderr
    keyring = file_keys(own_key)
    assert not keyring.legacy and [e.key_id for e in keyring.entries] == [0, 1]
    assert keyring.primary.key_id == 1 and keyring.get(0).status == "enabled"  # type: ignore[union-attr]
    assert keyring.get(0).material == crypto.read_key(key_file)  # type: ignore[union-attr]
    assert stat.S_IMODE(own_key.stat().st_mode) == 0o600
    assert sorted(p.name for p in own_key.parent.iterdir()) == ["secret.key"]  # no draft
    after = rows(engine)
    new = crypto.SecretKey(keyring.get(1).material, 1)  # type: ignore[union-attr]
    for n in range(120):
        key_id, sealed, index, card_key = after[user_row(n)[0]]
        assert (key_id, crypto.ciphertext_key_id(sealed), card_key) == (1, 1, 0)
        assert index == new.passport_index(passport_of(n))
        assert new.decrypt_passport(sealed, user_row(n)[0]) == passport_of(n)
        assert sealed != before[user_row(n)[0]][1]
    assert_verified(cli)
    status = json.loads(cli("keys", "status", "-o", "json").stdout)
    counts = {key["key_id"]: (key["passports"], key["card_fingerprints"]) for key in status["keys"]}
    assert counts == {0: (0, 120), 1: (120, 0)}
    assert status["primary_key_id"] == 1 and status["rotation"] is None
    said = cli("keys", "status").stderr
    assert "key 0: 120 card fingerprint(s) made under it recognise a card only while" in said
    assert audit_actions(engine) == [
        ("key.added", "1"),
        ("key.promoted", "1"),
        ("key.rotation_started", "1"),
        ("key.rotation_finished", "1"),
    ]
    # A new user goes under the new key; the same passport again is a duplicate.
    assert cli(*add_args(JOHN)).exit_code == 0
    assert rows(engine)["usr-001"][0] == 1
    assert cli(*add_args(JOHN | {"user_id": "usr-777"})).exit_code == 3
    with engine.connect() as connection:
        details = connection.execute(text("SELECT details::text FROM audit_events")).scalars()
        no_key_material(own_key, result.stdout, result.stderr, *details)


def test_a_rotation_stopped_after_batch_k_is_finished_by_resume_each_row_once(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, context: Context
) -> None:
    import_users(cli, tmp_path, 120)
    with pytest.raises(Stopped):
        rotate(context, batch_rows=25, after_batch=stop_after(2))
    assert per_key(engine) == {0: 70, 1: 50}
    done_first = {uid: row[1] for uid, row in rows(engine).items() if row[0] == 1}

    # Meanwhile: both keys read (old ciphertexts too), status says it is unfinished.
    assert_verified(cli)
    unhealthy = cli("status", "-o", "json")
    assert unhealthy.exit_code == 69
    assert any("unfinished" in problem for problem in json.loads(unhealthy.stdout)["problems"])
    refused = cli("keys", "rotate")
    assert refused.exit_code == 3 and "--resume" in refused.stderr
    # Onboarding goes on, under the new key; a passport under either key is a duplicate.
    assert cli(*add_args(JOHN)).exit_code == 0
    for n in (0, 119):  # rotated already / not yet
        twin = JOHN | {"user_id": f"usr-twin{n}", "passport": passport_of(n)}
        again = cli(*add_args(twin))
        assert again.exit_code == 3, again.stderr
        assert f"duplicate of user {user_row(n)[0]} (same passport)" in again.stderr

    resumed = cli("keys", "rotate", "--resume")

    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed and finished" in resumed.stderr
    assert per_key(engine) == {1: 121}
    after = rows(engine)
    assert {uid: after[uid][1] for uid in done_first} == done_first  # not re-encrypted again
    assert [e.key_id for e in file_keys(own_key).entries] == [0, 1]  # no third key
    with engine.connect() as connection:
        done, total, finished = connection.execute(
            text("SELECT rows_done, rows_total, finished_at IS NOT NULL FROM key_rotations")
        ).one()
    assert (done, total, finished) == (120, 120, True)
    assert [a for a in audit_actions(engine) if a[0] == "key.rotation_finished"] == [
        ("key.rotation_finished", "1")
    ]
    assert cli("keys", "rotate", "--resume").stderr.startswith("nothing to resume")
    assert_verified(cli)


def test_a_start_stopped_after_the_file_was_written_is_taken_up_by_resume(
    cli: Cli,
    engine: Engine,
    tmp_path: Path,
    own_key: Path,
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between the new keyring's write and the database's record of it: the file
    has a primary the database has not seen; writers keep the database's primary."""
    import_users(cli, tmp_path, 30)
    stop_the_start(monkeypatch, context)
    assert file_keys(own_key).primary.key_id == 1
    assert cli(*add_args(JOHN)).exit_code == 0
    assert per_key(engine) == {0: 31}
    refused = cli("keys", "rotate")
    assert refused.exit_code == 3 and "stopped before it began" in refused.stderr
    assert cli("keys", "rotate", "--resume").exit_code == 0
    assert per_key(engine) == {1: 31}
    assert [e.key_id for e in file_keys(own_key).entries] == [0, 1]
    assert_verified(cli)


def test_two_rotations_at_once_the_second_is_75_and_one_unfinished_refuses_a_new_one(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path
) -> None:
    import_users(cli, tmp_path, 5)
    before = own_key.read_bytes()
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": key_service.ROTATE_LOCK_ID})
        try:
            for args in (("keys", "rotate"), ("keys", "retire", "0")):
                busy = cli(*args)
                assert busy.exit_code == 75, busy.stderr
                assert "another keys rotate or keys retire is running" in busy.stderr
        finally:
            holder.execute(text("SELECT pg_advisory_unlock_all()"))
    assert own_key.read_bytes() == before
    assert per_key(engine) == {0: 5}


def test_a_key_file_that_cannot_be_rewritten_is_74_and_nothing_changes(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file mounted as a link (a Kubernetes secret) is never replaced by a file."""
    import_users(cli, tmp_path, 5)
    link = tmp_path / "linked.key"
    link.symlink_to(own_key)
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(link))
    before = row_counts(engine)
    result = cli("keys", "rotate")
    assert result.exit_code == 74, result.stderr
    assert "nothing was changed" in result.stderr
    assert link.is_symlink() and file_keys(own_key).legacy
    assert row_counts(engine) == before and per_key(engine) == {0: 5}


# --- online: writers during a rotation ----------------------------------------------


def test_onboarding_racing_a_rotation_never_lets_a_duplicate_passport_in(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, context: Context
) -> None:
    """Commands onboard twins of stored passports (each under the old key or the new one,
    as the rotation reaches it) and new users, while the rotation runs in small batches:
    every twin is refused, every new user created; `verify --keys` clean after."""
    from bnplctl.schemas import UserCreate
    from bnplctl.services.users import onboard

    import_users(cli, tmp_path, 300)
    errors: list[BaseException] = []
    outcomes: dict[str, str] = {}

    def rotation() -> None:
        try:
            with_context = Context()
            try:
                rotate(with_context, batch_rows=5, after_batch=lambda k: time.sleep(0.02))
            finally:
                with_context.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def onboarding(seed: int) -> None:
        picker = random.Random(seed)  # noqa: S311 - a test's choice
        try:
            for step in range(40):
                if step % 2:
                    n = picker.randrange(300)
                    fields = JOHN | {"user_id": f"twin-{seed}-{step}", "passport": passport_of(n)}
                else:
                    n = 500 + seed * 100 + step
                    fields = {
                        "user_id": f"new-{seed}-{step}",
                        "name": "New User",
                        "phone": f"+99891{n:07d}",
                        "passport": f"NW{n:07d}",
                        "card": "4111111111111111",
                        "dob": "1990-01-01",
                    }
                user = UserCreate.parse(dict(fields), date(2026, 12, 1))
                with unit() as work:
                    settings = Context().settings
                    try:
                        onboard(work.session, user, settings=settings, actor="t")
                        outcomes[fields["user_id"]] = "created"
                    except Conflict:
                        outcomes[fields["user_id"]] = "duplicate"
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=rotation)] + [
        threading.Thread(target=onboarding, args=(seed,)) for seed in (1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert {uid for uid, o in outcomes.items() if o == "duplicate"} == {
        uid for uid in outcomes if uid.startswith("twin-")
    }
    assert all(outcomes[uid] == "created" for uid in outcomes if uid.startswith("new-"))
    assert per_key(engine) == {1: 300 + 40}
    keyring = crypto.Keyring(file_keys(own_key).usable(), 1)
    passports = [keyring.decrypt_passport(row[1], uid) for uid, row in rows(engine).items()]
    assert len(set(passports)) == len(passports)
    assert_verified(cli)
    assert cli("verify").exit_code == 0


def test_a_user_updated_during_a_rotation_keeps_the_update(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path
) -> None:
    """The rotation never waits for a row another transaction holds: it goes round it
    and comes back; the update is not overwritten, and the row ends under the new key."""
    import_users(cli, tmp_path, 60)
    held_user = user_row(7)[0]
    errors: list[BaseException] = []

    def rotation() -> None:
        with_context = Context()
        try:
            rotate(with_context, batch_rows=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            with_context.close()

    with engine.connect() as holder:
        holder.execute(
            text("UPDATE users SET full_name = 'Changed Meanwhile' WHERE user_id = :id"),
            {"id": held_user},
        )  # uncommitted: the row is held
        thread = threading.Thread(target=rotation)
        thread.start()
        deadline = time.monotonic() + 30
        while per_key(engine).get(0, 0) > 1:
            assert time.monotonic() < deadline, "the rotation waited for the held row"
            time.sleep(0.05)
        assert thread.is_alive()  # the held row is still to do
        holder.commit()
    thread.join(30)
    assert not errors, errors
    assert not thread.is_alive()
    assert per_key(engine) == {1: 60}
    with engine.connect() as connection:
        name = connection.execute(
            text("SELECT full_name FROM users WHERE user_id = :id"), {"id": held_user}
        ).scalar()
    assert name == "Changed Meanwhile"
    assert_verified(cli)


def test_an_import_chunk_protected_before_a_rotation_began_goes_under_the_new_key(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, context: Context
) -> None:
    """A users import prepares its chunks ahead (worker processes): a chunk protected
    under the old key and applied after the rotation began is put under the new one and
    looked up under both; its twin of a stored passport is a duplicate."""
    from bnplctl.importing.readers import RawRow
    from bnplctl.importing.users import prepare_chunk

    import_users(cli, tmp_path, 40)
    with pytest.raises(Stopped):
        rotate(context, batch_rows=10, after_batch=stop_after(1))  # 10 rotated, 30 left
    old = crypto.Keyring(file_keys(own_key).usable()[0])
    fields = [
        {"user_id": "late-1", "passport": "LT0000001", "phone": "+998911111111"},
        {"user_id": "late-2", "passport": passport_of(35), "phone": "+998911111112"},
        {"user_id": "late-3", "passport": passport_of(3), "phone": "+998911111113"},
    ]
    raw = [
        RawRow(line=n + 2, fields=JOHN | row | {"card": "4111111111111111"}, error=None)
        for n, row in enumerate(fields)
    ]
    prepared = prepare_chunk(raw, date(2026, 12, 1), old)
    assert (prepared.primary_id, prepared.prior_id) == (0, None)
    staged, duplicates = insert_prepared(context, prepared, old)
    assert (staged.primary_id, staged.prior_id) == (1, 0)
    assert sorted(outcome.user_id for outcome in duplicates) == ["late-2", "late-3"]
    assert rows(engine)["late-1"][0] == 1
    assert cli("keys", "rotate", "--resume").exit_code == 0
    assert per_key(engine) == {1: 41}
    assert_verified(cli)


# --- keys retire ----------------------------------------------------------------------


def test_retire_is_refused_while_the_key_is_needed_then_marks_it_retired_everywhere(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, context: Context
) -> None:
    import_users(cli, tmp_path, 30)
    primary = cli("keys", "retire", "0")
    assert primary.exit_code == 3 and "is the primary key" in primary.stderr
    with pytest.raises(Stopped):
        rotate(context, batch_rows=10, after_batch=stop_after(1))
    in_rotation = cli("keys", "retire", "0")
    assert in_rotation.exit_code == 3 and "unfinished rotation" in in_rotation.stderr
    assert cli("keys", "rotate", "--resume").exit_code == 0
    # A passport under key 0 again (a restore, say): still needed.
    with engine.begin() as connection:
        restored = connection.execute(
            text("SELECT passport_ciphertext FROM users WHERE user_id = :id"),
            {"id": user_row(1)[0]},
        ).scalar_one()
    old = crypto.SecretKey(file_keys(own_key).usable()[0], 0)
    new = crypto.SecretKey(file_keys(own_key).usable()[1], 1)
    passport = new.decrypt_passport(bytes(restored), user_row(1)[0])
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE users SET passport_ciphertext = :c, passport_blind_index = :i,"
                " passport_key_id = 0 WHERE user_id = :id"
            ),
            {
                "c": old.encrypt_passport(passport, user_row(1)[0]),
                "i": old.passport_index(passport),
                "id": user_row(1)[0],
            },
        )
    needed = cli("keys", "retire", "0")
    assert needed.exit_code == 3 and "1 passport(s) are under it" in needed.stderr
    assert cli("keys", "rotate").exit_code == 0  # 2: puts it under key 2
    before = own_key.read_text()

    retired = cli("keys", "retire", "0")

    assert retired.exit_code == 0, retired.stderr
    assert "30 card fingerprint(s) made under it no longer recognise a card" in retired.stderr
    assert file_keys(own_key).get(0).status == "retired"  # type: ignore[union-attr]
    assert own_key.read_text() != before and stat.S_IMODE(own_key.stat().st_mode) == 0o600
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status, retired_at IS NOT NULL FROM secret_keys WHERE key_id = 0")
        ).one()
    assert tuple(status) == ("retired", True)
    assert ("key.retired", "0") in audit_actions(engine)
    again = cli("keys", "retire", "0")
    assert again.exit_code == 0 and "retired before" in again.stderr
    unknown = cli("keys", "retire", "9")
    assert unknown.exit_code == 4
    shown = json.loads(cli("keys", "status", "-o", "json").stdout)
    assert [key["status"] for key in shown["keys"]] == ["retired", "enabled", "enabled"]
    assert_verified(cli)
    assert cli(*add_args(JOHN)).exit_code == 0  # the retired key is not needed


# --- verify --keys --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped byte", "swapped rows", "unknown key id", "index"])
def test_verify_keys_catches_a_tampered_passport(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, damage: str
) -> None:
    import_users(cli, tmp_path, 12)
    assert cli("keys", "rotate").exit_code == 0
    first, second = user_row(3)[0], user_row(4)[0]
    statements = {
        "flipped byte": "UPDATE users SET passport_ciphertext = set_byte(passport_ciphertext,"
        " 20, get_byte(passport_ciphertext, 20) # 1) WHERE user_id = :first",
        "swapped rows": "UPDATE users SET passport_ciphertext = (SELECT passport_ciphertext"
        " FROM users WHERE user_id = :second) WHERE user_id = :first",
        "unknown key id": "UPDATE users SET passport_key_id = 9, passport_ciphertext ="
        " overlay(passport_ciphertext placing '\\x020009'::bytea from 1 for 3)"
        " WHERE user_id = :first",
        "index": "UPDATE users SET passport_blind_index = repeat('0', 64) WHERE user_id = :first",
    }
    with engine.begin() as connection:
        connection.execute(text(statements[damage]), {"first": first, "second": second})

    result = cli("verify", "--keys", "-o", "json")

    assert result.exit_code == 69
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "passport_keys"]
    assert (check["violations"], check["examples"], check["rows"]) == (1, [first], 12)
    assert "invariants broken: passport_keys" in result.stderr
    sampled = cli("verify", "--keys", "--sample", "3", "-o", "json")
    [check] = [c for c in json.loads(sampled.stdout)["checks"] if c["check"] == "passport_keys"]
    assert check["rows"] == 3
    assert cli("verify").exit_code == 0  # rule 9 alone does not read passports


def test_sample_without_keys_is_a_usage_error(cli: Cli) -> None:
    result = cli("verify", "--sample", "3")
    assert result.exit_code == 2 and "--sample goes with --keys" in result.stderr


# --- keys status and status -----------------------------------------------------------


def test_an_over_age_primary_key_makes_status_unhealthy_until_rotated(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_users(cli, tmp_path, 3)
    assert cli("debt", "sweep").exit_code == 0
    monkeypatch.setenv("BNPL_KEY_MAX_AGE_DAYS", "30")
    with engine.begin() as connection:  # the single-key file is dated by the database
        connection.execute(text("UPDATE secret_keys SET created_at = now() - interval '40 days'"))
    unhealthy = cli("status", "-o", "json")
    assert unhealthy.exit_code == 69
    report = json.loads(unhealthy.stdout)
    assert report["problems"] == [
        "key 0 (primary) is 40 days old, over BNPL_KEY_MAX_AGE_DAYS (30): `bnplctl keys rotate`"
    ]
    assert report["secret_key"]["keys"] == "primary key 0, 40 days old (max 30)"
    shown = cli("keys", "status")
    assert shown.exit_code == 69 and "40 days old" in shown.stderr
    assert cli("keys", "rotate").exit_code == 0
    assert cli("status").exit_code == 0
    assert file_keys(own_key).get(0).created_at is not None  # type: ignore[union-attr]
    monkeypatch.setenv("BNPL_KEY_MAX_AGE_DAYS", "0")
    assert cli("keys", "status").exit_code == 78


def test_keys_status_at_80_columns_keeps_the_counts(
    cli: Cli, tmp_path: Path, own_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_users(cli, tmp_path, 4)
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("keys", "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any("passports" in line for line in lines)
    assert f"key file: {own_key} (single key, mode 0600)" in result.stderr


def test_a_fresh_database_and_keyring_rotate_from_the_start(
    cli: Cli, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys init` writes a keyring; the database learns its key 0; a rotation of an
    empty database adds key 1 and finishes at once."""
    path = tmp_path / "ring.key"
    monkeypatch.setenv("BNPL_SECRET_KEY_FILE", str(path))
    assert cli("keys", "init", str(path)).exit_code == 0
    assert json.loads(path.read_text())["keys"][0]["id"] == 0
    result = cli("keys", "rotate", "-o", "json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["from_key_id"], shown["to_key_id"], shown["rows_total"]) == (0, 1, 0)
    assert cli(*add_args(JOHN)).exit_code == 0
    assert per_key(engine) == {1: 1}


def test_a_key_file_lacking_the_primary_the_database_writes_under_is_78(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path, key_file: Path
) -> None:
    """After a rotation, the old single-key file (a stale copy) cannot onboard: it lacks
    key 1, which the database now writes passports under."""
    import_users(cli, tmp_path, 3)
    stale = tmp_path / "stale.key"
    shutil.copy(own_key, stale)
    assert cli("keys", "rotate").exit_code == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BNPL_SECRET_KEY_FILE", str(stale))
        before = row_counts(engine)
        result = cli(*add_args(JOHN))
        assert result.exit_code == 78
        assert "lacks key 1" in result.stderr
        assert row_counts(engine) == before


def test_a_card_is_recognised_under_every_enabled_key_until_its_key_is_retired(
    cli: Cli, tmp_path: Path, own_key: Path
) -> None:
    """Card fingerprints cannot be made again (the number is never stored): one made
    under key 0 keeps matching after the rotation, and stops when key 0 is retired."""
    card = JOHN["card"]
    assert cli(*add_args(JOHN)).exit_code == 0  # under key 0
    assert cli("keys", "rotate").exit_code == 0
    twin = JOHN | {"user_id": "usr-002", "passport": "ZZ7654321", "phone": "+998935551234"}
    assert cli(*add_args(twin)).exit_code == 0  # the same card, under key 1

    def holders(*args: str, stdin: str | None = None) -> list[str]:
        result = cli("users", "list", *args, "-o", "json", input=stdin)
        assert result.exit_code == 0, result.stderr
        assert card not in result.stdout + result.stderr
        return [user["user_id"] for user in json.loads(result.stdout)]

    assert holders("--card", card) == ["usr-001", "usr-002"]
    assert holders("--card", "-", stdin=card + "\n") == ["usr-001", "usr-002"]
    assert holders("--card", "5555555555554444") == []
    assert cli("keys", "retire", "0").exit_code == 0
    assert holders("--card", card) == ["usr-002"]
    bad = cli("users", "list", "--card", "4111111111111112")
    assert bad.exit_code == 2 and "--card: fails the Luhn check" in bad.stderr
    assert "4111111111111112" not in bad.stderr


def test_a_key_file_lacking_a_key_passports_are_under_makes_status_say_so(
    cli: Cli, tmp_path: Path, own_key: Path
) -> None:
    import_users(cli, tmp_path, 3)
    assert cli("keys", "rotate").exit_code == 0
    document = json.loads(own_key.read_text())
    document["keys"] = [key for key in document["keys"] if key["id"] == 0]
    document["keys"][0]["primary"] = True  # the old file, as if restored from a backup
    own_key.write_text(json.dumps(document))
    for args in (("status", "-o", "json"), ("keys", "status", "-o", "json")):
        result = cli(*args)
        assert result.exit_code == 69
        problems = json.loads(result.stdout)["problems"]
        assert "passports are under key 1, which the key file lacks" in problems
    lacking = cli(*add_args(JOHN))
    assert lacking.exit_code == 78 and "lacks key 1" in lacking.stderr


def test_a_rotation_killed_with_sigkill_is_finished_by_resume(
    cli: Cli, engine: Engine, tmp_path: Path, own_key: Path
) -> None:
    """The real thing: `keys rotate` as its own process, SIGKILLed mid-way (held back by
    a row another transaction holds, which it goes round and waits for), then
    `--resume`: every passport under the new key, once."""
    import os
    import signal
    import subprocess
    import sys

    import_users(cli, tmp_path, 12_000)  # three batches
    last = user_row(11_999)[0]
    with engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM users WHERE user_id = :id FOR UPDATE"), {"id": last})
        rotating = subprocess.Popen(
            [str(Path(sys.executable).parent / "bnplctl"), "keys", "rotate"],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while per_key(engine).get(0, 0) > 1:  # all but the held row rotated
            assert time.monotonic() < deadline and rotating.poll() is None
            time.sleep(0.05)
        rotating.send_signal(signal.SIGKILL)
        rotating.wait(10)
        holder.rollback()
    assert per_key(engine) == {0: 1, 1: 11_999}
    shown = json.loads(cli("keys", "status", "-o", "json").stdout)
    assert shown["rotation"]["rows_done"] == 11_999
    resumed = cli("keys", "rotate", "--resume", "-o", "json")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["rows_rotated"] == 1
    assert per_key(engine) == {1: 12_000}
    assert [entry.key_id for entry in file_keys(own_key).entries] == [0, 1]
    assert_verified(cli)


def test_a_rotation_at_a_terminal_shows_its_progress_in_rows(
    cli: Cli, tmp_path: Path, own_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.progress import Progress

    from bnplctl.cli import output

    import_users(cli, tmp_path, 12)
    seen: list[tuple[float | None, float | None]] = []
    refresh = Progress.refresh

    def watched(progress: Progress) -> None:
        task = progress.tasks[0]
        seen.append((task.completed, task.total))
        refresh(progress)

    monkeypatch.setattr(output, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(Progress, "refresh", watched)
    monkeypatch.setattr(key_service, "BATCH_ROWS", 5)
    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.stderr
    assert (5, 12) in seen and seen[-1] == (12, 12)
