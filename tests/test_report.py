"""The portfolio report: ``debt report``'s bars at the terminal, and ``--html``: one
self-contained file, masked, that a browser draws."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli
from tests.helpers import JOHN, add_args, run_sweep

CHROMIUM = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (found := shutil.which(name))
    ),
    None,
)


@pytest.fixture
def portfolio(cli: Cli, engine: Engine) -> None:
    """John with a plan four months old (overdue), a partial payment, a refund, and
    sweeps on three business dates."""
    assert cli(*add_args(JOHN)).exit_code == 0
    created = cli("plans", "create", "--user", JOHN["user_id"], "--amount", "600.00",
                  "--installments", "6", "--start", "2026-07-01", "-o", "json")  # fmt: skip
    assert created.exit_code == 0, created.stderr
    for day in (date(2026, 10, 5), date(2026, 11, 5), date(2026, 12, 1)):
        run_sweep(as_of=day, dry_run=False, actor="t")
    first = json.loads(created.stdout)["installments"][0]["id"]
    assert cli("installments", "pay", str(first), "--amount", "40").exit_code == 0


def test_the_terminal_report_draws_each_bucket_as_a_bar(cli: Cli, portfolio: None) -> None:
    table = cli("debt", "report", "--as-of", "2026-12-01").stdout
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if "│" in line}

    bars = {bucket: rows[bucket].count("█") for bucket in ("1-30", "31-60", "61-90", "90+")}
    # Due 08-01 (60.00 left of 100.00) and 09-01: 90+; 10-01: 61-90; 11-01: 1-30.
    assert bars == {"90+": 20, "61-90": 12, "1-30": 12, "31-60": 0}  # 160, 100, 100, 0
    machine = json.loads(cli("debt", "report", "--as-of", "2026-12-01", "-o", "json").stdout)
    assert "share" not in machine["buckets"][0]


def test_the_html_report_is_one_self_contained_masked_file(
    cli: Cli, portfolio: None, tmp_path: Path
) -> None:
    target = tmp_path / "portfolio.html"

    result = cli("debt", "report", "--as-of", "2026-12-01", "--html", str(target))

    assert result.exit_code == 0, result.stderr
    assert f"portfolio report written to {target}" in result.stderr
    document = target.read_text()
    assert document.startswith("<!DOCTYPE html>")
    assert document.count("<svg") == 3
    # Nothing fetched from anywhere: no scheme, no external reference, no script.
    fetched = re.sub(r'xmlns(:\w+)?="[^"]*"', "", document)  # names, not addresses
    assert not re.search(r"(https?:|//[a-z]|<script|<link|<img|@import)", fetched, re.I)
    assert all(ref.startswith("#") for ref in re.findall(r'href="([^"]*)"', document))
    assert "+998****4567" in document and "901234567" not in document
    assert "<b>360.00</b>" in document  # the overdue total: 60.00 + 3 × 100.00
    assert "2026-11-05" in document  # a sweep's business date on the history chart


def test_an_unwritable_report_path_is_exit_74_and_leaves_nothing(
    cli: Cli, portfolio: None, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "report.html"
    for fmt in ("table", "json"):
        result = cli("debt", "report", "--html", str(missing), "-o", fmt)
        assert result.exit_code == 74
        assert result.stderr.strip() == f"error: cannot write the report to {missing}" + (
            " (No such file or directory)"
        )
        assert result.stdout == ""  # refused before anything is printed
    assert not missing.parent.exists()


@pytest.mark.parametrize(("target", "code"), [("-", 2), ("", 2), ("sub/", 74), ("sub/.", 74)])
def test_a_report_path_that_names_no_file_is_refused(
    cli: Cli,
    portfolio: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    code: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("debt", "report", "--as-of", "2026-12-01", "--html", target)
    assert result.exit_code == code, result.stderr
    assert result.stdout == ""  # refused before anything is printed
    assert list(tmp_path.iterdir()) == []


def test_a_report_path_through_a_link_writes_the_file_it_names(
    cli: Cli, portfolio: None, tmp_path: Path
) -> None:
    (tmp_path / "www").mkdir()
    real = tmp_path / "www" / "portfolio.html"
    real.write_text("last week's report")
    link = tmp_path / "latest.html"
    link.symlink_to(real)
    assert cli("debt", "report", "--as-of", "2026-12-01", "--html", str(link)).exit_code == 0
    assert link.is_symlink()
    assert real.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "www").iterdir()) == ["portfolio.html"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs it)")
def test_the_html_report_renders_in_a_browser(
    cli: Cli, portfolio: None, engine: Engine, tmp_path: Path
) -> None:
    from matplotlib.image import imread

    target = tmp_path / "portfolio.html"
    assert cli("debt", "report", "--as-of", "2026-12-01", "--html", str(target)).exit_code == 0
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
         f"--screenshot={shot}", target.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip

    pixels = imread(shot)[:, :, :3]
    drawn = (pixels < 0.9).any(axis=2)  # not white
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.25  # the bars and lines
    assert drawn.mean() > 0.03, "the page is blank"
    assert coloured.mean() > 0.005, "no chart was drawn"
    with engine.connect() as connection:  # the report only reads
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 1
