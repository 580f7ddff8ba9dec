"""Reporting a finished batch: the summary, the rejects, and exit 5 when any row was rejected."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from bnplctl.cli.options import OutputFormat
from bnplctl.errors import ExitCode
from bnplctl.importing.batch import BatchReport, Rejected, RejectsFile

_REJECTS_SHOWN = 20
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def progress_size(source: str) -> int | None:
    """The size of a file large enough to deserve a progress bar; None otherwise (and
    for standard input, whose size is unknown)."""
    if source == "-":
        return None
    size = Path(source).stat().st_size
    return size if size >= PROGRESS_MIN_BYTES else None


def _rows(rejected: Sequence[Rejected], key_name: str) -> list[dict[str, Any]]:
    return [
        {"line": row.line, key_name: row.key, "outcome": row.outcome, "reason": row.reason}
        for row in rejected
    ]


def show_rejects(
    shown: Sequence[Rejected], total: int, *, key_name: str, rejects: Path | None, title: str
) -> None:
    """The first rejected rows as a table on stderr, and where the rest went."""
    from bnplctl.cli.output import message, table_to_stderr

    if shown:
        table_to_stderr(
            _rows(shown[:_REJECTS_SHOWN], key_name),
            ["line", key_name, "outcome", "reason"],
            title=title,
        )
        if total > min(len(shown), _REJECTS_SHOWN):
            message(f"… and {total - min(len(shown), _REJECTS_SHOWN)} more; "
                    "use --rejects FILE for all")  # fmt: skip
    if rejects is not None:
        message(f"{total} row(s) written to {rejects}")


def finish_batch(
    report: BatchReport,
    output: OutputFormat,
    *,
    rejects: RejectsFile | None,
    source: str,
    key_name: str,
    title: str,
    exit_on_rejects: bool = True,
    extra: dict[str, Any] | None = None,
) -> None:
    """The summary (with ``extra`` after the counts), the rejects (of ``source``), and
    exit 5 when any row was rejected."""
    from bnplctl.cli.output import render_one

    if rejects is not None:
        for row in report.rejected:
            rejects.write(source, row)
        rejects.close()
    summary = report.summary() | (extra or {})
    if output is not OutputFormat.table:
        summary["rejected"] = _rows(report.rejected, key_name)
    render_one(summary, output, title=title)
    shown = report.rejected if output is OutputFormat.table else []
    show_rejects(
        shown,
        len(report.rejected),
        key_name=key_name,
        rejects=rejects.path if rejects is not None else None,
        title="Rejected rows",
    )
    if exit_on_rejects and report.has_rejections:
        raise typer.Exit(code=ExitCode.BATCH_REJECTED)
