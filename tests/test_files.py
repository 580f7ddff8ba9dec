"""Files an operator can trust: rejects files and the CSV the tool writes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts
from tests.helpers import SAMPLE_CSV, add_args

FORMULAS = ('=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(A1:A2)", "-2+3")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("how", ["same", "dotted", "symlink"])
def test_a_rejects_path_that_is_the_input_is_refused_before_anything(
    cli: Cli, engine: Engine, tmp_path: Path, how: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(SAMPLE_CSV)
    target = {
        "same": source,
        "dotted": tmp_path / "sub" / ".." / "users.csv",
        "symlink": tmp_path / "link.csv",
    }[how]
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        target.symlink_to(source)
    before = row_counts(engine)
    for command in (("users", "import"), ("webhooks", "ingest")):
        result = cli(*command, str(source), "--rejects", str(target))
        assert result.exit_code == 2, result.stderr
        assert "is an input file" in result.stderr
    assert source.read_text() == SAMPLE_CSV
    assert row_counts(engine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["users.csv", "sub"] + (["link.csv"] if how == "symlink" else [])
    )


def test_rejects_into_standard_input_is_refused_when_it_is_the_input(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """``- --rejects /dev/stdin`` with stdin from a file would write into the input."""
    import subprocess
    import sys

    source = tmp_path / "updates.csv"
    source.write_text(BAD_UPDATES)
    command = [sys.executable, "-m", "bnplctl", "webhooks", "ingest", "-", "--rejects"]
    with source.open() as stdin:
        refused = subprocess.run(  # noqa: S603 - our own CLI
            [*command, "/dev/stdin"], stdin=stdin, capture_output=True, text=True, check=False
        )
    assert refused.returncode == 2, refused.stderr
    assert "is an input file" in refused.stderr
    assert source.read_text() == BAD_UPDATES
    with source.open() as stdin:  # another path is fine
        other = tmp_path / "rejects.csv"
        done = subprocess.run(  # noqa: S603 - our own CLI
            [*command, str(other)], stdin=stdin, capture_output=True, text=True, check=False
        )
    assert done.returncode == 5, done.stderr
    assert [row["refund_id"] for row in _csv(other)] == ["NOPE-1", "NOPE-2"]


def test_an_existing_rejects_file_is_kept_when_the_run_fails_early(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    kept = tmp_path / "rejects.csv"
    kept.write_text("yesterday's rejects\n")
    missing = tmp_path / "missing.csv"
    broken = tmp_path / "broken.csv"
    broken.write_text("refund_id,status,status,user_id\nX,approved,x,u\n")  # 65: a column twice
    for command in (("users", "import"), ("webhooks", "ingest")):
        for source, code in ((missing, 66), (broken, 65)):
            result = cli(*command, str(source), "--rejects", str(kept))
            assert result.exit_code == code, result.stderr
            assert kept.read_text() == "yesterday's rejects\n"
    # no draft left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv", "rejects.csv"]


BAD_UPDATES = "refund_id,status\nNOPE-1,approved\nNOPE-2,approved\n"


def test_a_rejects_path_through_a_link_writes_the_file_it_names(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "rejects.csv"
    real.write_text("yesterday's rejects\n")
    link = tmp_path / "rejects.csv"
    link.symlink_to(real)
    dangling = tmp_path / "later.csv"
    dangling.symlink_to(tmp_path / "reports" / "later.csv")
    for target in (link, dangling):
        assert cli("webhooks", "ingest", str(updates), "--rejects", str(target)).exit_code == 5
        assert target.is_symlink()  # the operator's link is kept, not replaced by a file
        assert [row["refund_id"] for row in _csv(target)] == ["NOPE-1", "NOPE-2"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["later.csv", "rejects.csv"]


def test_a_rejects_path_that_is_not_a_regular_file_is_written_through(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A pipe (``--rejects >(gzip > r.gz)``, a FIFO, /dev/stderr) gets the rows
    written into it; it is never replaced by a file of the same name."""
    import os
    import threading

    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    fifo = tmp_path / "rejects.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = cli("webhooks", "ingest", str(updates), "--rejects", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 5, result.stderr
    assert fifo.is_fifo()
    rows = list(csv.DictReader(io.StringIO(received[0])))
    assert [row["refund_id"] for row in rows] == ["NOPE-1", "NOPE-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.fifo", "updates.csv"]


def test_rejects_name_their_file_and_neutralise_formulas(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    assert cli(*add_args({
        "user_id": "usr-001", "name": "John Doe", "phone": "+998901234567",
        "passport": "AA1234567", "card": "4111111111111111", "dob": "1990-05-20",
    })).exit_code == 0  # fmt: skip
    day1 = tmp_path / "day1.csv"
    day1.write_text("refund_id,status\n" + "".join(f"{f},approved\n" for f in FORMULAS[:2]))
    day2 = tmp_path / "day2.jsonl"
    day2.write_text("".join(json.dumps({"refund_id": f, "status": "x"}) + "\n" for f in FORMULAS))
    rejects = tmp_path / "rejects.csv"
    result = cli("webhooks", "ingest", str(day1), str(day2), "--rejects", str(rejects))
    assert result.exit_code == 5
    rows = _csv(rejects)
    assert [(row["file"], row["line"]) for row in rows] == [
        (str(day1), "2"), (str(day1), "3"),
        (str(day2), "1"), (str(day2), "2"), (str(day2), "3"), (str(day2), "4"),
    ]  # fmt: skip
    assert [row["refund_id"] for row in rows] == [f"'{f}" for f in (*FORMULAS[:2], *FORMULAS)]

    users = tmp_path / "users.csv"
    users.write_text("user_id,name,phone,passport,card,dob\n=1+1,=evil(),+1,A,1,1990-01-01\n")
    assert cli("users", "import", str(users), "--rejects", str(rejects)).exit_code == 5
    (row,) = _csv(rejects)
    assert (row["file"], row["line"], row["user_id"]) == (str(users), "2", "'=1+1")


def test_csv_exports_neutralise_formulas_but_not_their_own_formats(
    cli: Cli, engine: Engine
) -> None:
    user = {
        "user_id": "usr-001", "name": "=HYPERLINK(\"http://x\",\"y\")", "phone": "+998901234567",
        "passport": "AA1234567", "card": "4111111111111111", "dob": "1990-05-20",
    }  # fmt: skip
    assert cli(*add_args(user)).exit_code == 0
    assert cli("refunds", "create", "--user", "usr-001", "--transaction-id", "@SUM(A1)",
               "--amount", "10").exit_code == 0  # fmt: skip
    (listed,) = list(csv.DictReader(io.StringIO(cli("users", "list", "-o", "csv").stdout)))
    assert listed["full_name"] == "'" + user["name"]
    assert listed["phone_number"] == "+998****4567"  # the tool's own format, left as it is
    (refund,) = list(csv.DictReader(io.StringIO(cli("refunds", "list", "-o", "csv").stdout)))
    assert refund["transaction_id"] == "'@SUM(A1)"
    # JSON is never altered.
    (shown,) = json.loads(cli("users", "list", "-o", "json").stdout)
    assert shown["full_name"] == user["name"]


@pytest.mark.parametrize("dob", ["19900520", "1990-W20-7", "1990-5-20", " 1990-05-20T00:00"])
def test_dates_of_birth_are_exactly_yyyy_mm_dd(cli: Cli, engine: Engine, dob: str) -> None:
    user = {
        "user_id": "usr-001", "name": "John Doe", "phone": "+998901234567",
        "passport": "AA1234567", "card": "4111111111111111", "dob": dob,
    }  # fmt: skip
    before = row_counts(engine)
    result = cli(*add_args(user))
    assert result.exit_code == 2  # an option: a usage error (a file's row: invalid)
    assert "Invalid value for '--dob': must be a date written YYYY-MM-DD" in result.stderr
    assert row_counts(engine) == before


def _bnplctl(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "bnplctl", *args], text=True, check=False, **kwargs
    )


def test_rejects_to_dev_stderr_append_to_what_stderr_is_redirected_to(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """``--rejects /dev/stderr 2>>cron.log`` must add to the log, not replace it (renaming
    a file over the redirect target would), and the command's own lines stay in it."""
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    (tmp_path / "fds").symlink_to("/proc/self/fd")
    for target in ("/dev/stderr", "//dev/fd/2", f"{tmp_path}/fds/2"):
        log = tmp_path / "cron.log"
        log.write_text("old log\n")
        with log.open("a") as stderr:
            done = _bnplctl("webhooks", "ingest", str(updates), "--rejects", target,
                            stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        assert done.returncode == 5
        text = log.read_text()
        assert text.startswith("old log\n"), target
        assert "file,line,refund_id,outcome,reason" in text and "NOPE-2" in text
        assert f"2 row(s) written to {target}" in text  # the command's own line, after them
    out = tmp_path / "out.json"
    with out.open("w") as stdout:
        done = _bnplctl("webhooks", "ingest", str(updates), "--rejects", "/dev/stdout",
                        "-o", "json", stdout=stdout, stderr=subprocess.PIPE)  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert '"unknown_refund": 2' in out.read_text()  # the summary is still there
    assert "file,line,refund_id,outcome,reason" in out.read_text()


@pytest.mark.parametrize(
    "target", ["missing-dir/rejects.csv", "loop", "adir/", "newdir/", "ghost.csv/."]
)
def test_a_rejects_path_that_cannot_be_written_is_exit_74_before_anything(
    cli: Cli, engine: Engine, tmp_path: Path, target: str
) -> None:
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "adir").mkdir()
    before = row_counts(engine)
    result = cli("webhooks", "ingest", str(updates), "--rejects", f"{tmp_path}/{target}")
    assert result.exit_code == 74, result.stderr
    assert "cannot write the rejects file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert row_counts(engine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "loop", "updates.csv"]


@pytest.mark.parametrize("target", ["-", ""])
def test_a_rejects_path_that_names_no_file_is_a_usage_error(
    cli: Cli, engine: Engine, tmp_path: Path, target: str
) -> None:
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    result = cli("webhooks", "ingest", str(updates), "--rejects", target)
    assert result.exit_code == 2, result.stderr
    assert "--rejects" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["updates.csv"]


def test_a_full_disk_keeps_the_old_rejects_file_and_leaves_no_draft(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """A write that fails midway (EFBIG here, as ENOSPC on a full disk): exit 74 with one
    line, yesterday's rejects file as it was, no temporary file left beside it."""
    import resource
    import signal

    updates = tmp_path / "updates.csv"
    updates.write_text("refund_id,status\n" + "".join(f"NONE-{n},approved\n" for n in range(30000)))
    kept = tmp_path / "rejects.csv"
    kept.write_text("yesterday's rejects\n")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = _bnplctl("webhooks", "ingest", str(updates), "--rejects", str(kept),
                    capture_output=True, preexec_fn=small_files)  # fmt: skip
    assert done.returncode == 74, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {kept}: cannot write")
    assert kept.read_text() == "yesterday's rejects\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.csv", "updates.csv"]


def test_an_existing_rejects_file_keeps_its_permissions(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    private = tmp_path / "rejects.csv"
    private.write_text("old\n")
    private.chmod(0o600)
    assert cli("webhooks", "ingest", str(updates), "--rejects", str(private)).exit_code == 5
    assert private.stat().st_mode & 0o777 == 0o600
    assert "NOPE-1" in private.read_text()


def test_a_rejects_file_that_fails_at_the_end_still_says_what_was_applied(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    """Every row was handled, only the rejects file could not be written (a full disk):
    exit 74, and its one line says the rows stay handled."""
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    result = cli("webhooks", "ingest", str(updates), "--rejects", "/dev/full")
    assert result.exit_code == 74
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: /dev/full: cannot write the rejects file")
    assert "; 2 row(s) of this run's finished chunks stay handled (0 applied, 2 not)" in line


@pytest.mark.parametrize("stderr", ["closed", "full"])
def test_a_command_keeps_its_exit_code_when_stderr_cannot_be_written(
    cli: Cli, engine: Engine, stderr: str
) -> None:
    """``2>&-`` or a full disk under the log: the message is lost, the exit code is not
    (it was 1, an internal error)."""
    import os

    if stderr == "closed":
        done = _bnplctl("users", "show", "nobody", capture_output=False,
                        stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2))  # fmt: skip
    else:
        with open("/dev/full", "w") as full:
            done = _bnplctl("users", "show", "nobody", stdout=subprocess.DEVNULL, stderr=full)
    assert done.returncode == 4


@pytest.mark.parametrize(
    ("command", "header"),
    [
        (["users", "import"], "user_id;name;phone;passport;card;dob"),
        (["webhooks", "ingest"], "refund_id;status;merchant_reference"),
        (["payments", "import"], "reference;amount;user_id"),
    ],
)
def test_a_csv_header_split_by_semicolons_gets_a_hint_about_the_separator(
    cli: Cli, engine: Engine, tmp_path: Path, command: list[str], header: str
) -> None:
    source = tmp_path / "rows.csv"
    source.write_text(f"{header}\nsomething;else\n")
    before = row_counts(engine)
    result = cli(*command, str(source))

    assert result.exit_code == 65
    (line,) = result.stderr.strip().splitlines()
    assert "line 1: missing column(s)" in line
    assert "the header is separated by ';': bnplctl reads comma-separated CSV" in line
    after = row_counts(engine)
    assert [after[t] for t in ("users", "payments", "webhook_events")] == [
        before[t] for t in ("users", "payments", "webhook_events")
    ]


def _written_by(cli: Cli, tmp_path: Path, target: Path, what: str) -> Any:
    """One of the files a command writes itself, at ``target``."""
    updates = tmp_path / "updates.csv"
    updates.write_text(BAD_UPDATES)
    if what == "--rejects":
        return cli("webhooks", "ingest", str(updates), "--rejects", str(target))
    if what == "--html":
        return cli("debt", "report", "--as-of", "2026-12-01", "--html", str(target))
    return cli("verify", "--log-file", str(target))


@pytest.mark.parametrize("what", ["--rejects", "--html", "--log-file"])
def test_the_secret_key_is_never_an_output_by_any_name(
    cli: Cli, engine: Engine, key_file: Path, tmp_path: Path, what: str
) -> None:
    before = key_file.read_bytes()
    link = tmp_path / "report.out"
    link.symlink_to(key_file)
    hard_link = key_file.parent / f"{tmp_path.name}.out"
    os.link(key_file, hard_link)
    try:
        for target in (key_file, link, hard_link):
            result = _written_by(cli, tmp_path, target, what)
            assert result.exit_code == 2, result.stderr
            assert "that is the secret key or an env file, which are never an output" in (
                result.stderr
            )
            assert key_file.read_bytes() == before
    finally:
        hard_link.unlink()
    assert not [p for p in key_file.parent.iterdir() if p.name.startswith(".")]  # no draft


@pytest.mark.parametrize("what", ["--rejects", "--html", "--log-file"])
def test_a_link_planted_in_a_sticky_directory_is_not_followed(
    cli: Cli, engine: Engine, tmp_path: Path, what: str
) -> None:
    """As the kernel's protected_symlinks: in a sticky world-writable directory (/tmp), a
    link owned neither by the caller nor by the directory's owner is not followed, even
    by root, whose files it would let another user replace."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    victim = private / "shadow"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    planted = shared / "report.out"
    planted.symlink_to(victim)
    os.chown(planted, 4242, 4242, follow_symlinks=False)  # another user's link

    result = _written_by(cli, tmp_path, planted, what)

    assert result.exit_code == 2, result.stderr
    assert f"{planted} is a link another user made in a sticky world-writable" in result.stderr
    assert victim.read_text() == "root only\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in shared.iterdir()) == ["report.out"]
    # the caller's own link there, and a link in a directory that is not sticky, are followed
    own = shared / "own.out"
    own.symlink_to(private / "own.out")
    assert _written_by(cli, tmp_path, own, what).exit_code in (0, 5)
    assert (private / "own.out").stat().st_size > 0
    shared.chmod(0o777)
    assert _written_by(cli, tmp_path, planted, what).exit_code in (0, 5)
    assert victim.read_text() != "root only\n"


@pytest.mark.parametrize("what", ["--rejects", "--html"])
def test_a_replaced_file_keeps_its_permissions_but_never_setuid_or_setgid(
    cli: Cli, engine: Engine, tmp_path: Path, what: str
) -> None:
    target = tmp_path / "out.file"
    target.write_text("old\n")
    target.chmod(0o6755)
    assert target.stat().st_mode & 0o6000 == 0o6000
    assert _written_by(cli, tmp_path, target, what).exit_code in (0, 5)
    assert target.read_text() != "old\n"
    assert oct(target.stat().st_mode & 0o7777) == oct(0o755)


@pytest.mark.parametrize(
    "command", [("users", "import"), ("webhooks", "ingest"), ("payments", "import")]
)
@pytest.mark.parametrize("fmt", ["auto", "csv", "jsonl", "json"])
def test_an_input_that_fails_to_read_is_66_in_one_line(
    cli: Cli, engine: Engine, command: tuple[str, str], fmt: str
) -> None:
    """/proc/self/mem opens but every read fails (EIO), as a failing disk does: the
    input is unreadable (66), not a bug (1)."""
    before = row_counts(engine)

    result = cli(*command, "/proc/self/mem", "--format", fmt)

    assert result.exit_code == 66, result.stderr
    assert result.stderr == "error: /proc/self/mem: cannot be read (Input/output error)\n"
    after = row_counts(engine)
    assert after.pop("ingested_files") <= 1  # a webhook file's record, left unfinished
    before.pop("ingested_files")
    assert after == before


@pytest.mark.parametrize(
    "command", [("users", "import"), ("webhooks", "ingest"), ("payments", "import")]
)
def test_standard_input_named_twice_is_a_usage_error(cli: Cli, command: tuple[str, ...]) -> None:
    """``-`` given twice: a path that may not be used (exit 2, PRODUCT.md), said before
    anything is read."""
    result = cli(*command, "-", "-", input="x\n")
    assert result.exit_code == 2, result.stderr
    assert "standard input (-) can be read only once" in result.stderr
