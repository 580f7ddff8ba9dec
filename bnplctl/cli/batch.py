"""Reporting a finished batch: the summary, the rejects, and exit 5 when any row was rejected."""

from __future__ import annotations

from pathlib import Path

import typer

from bnplctl.cli.options import OutputFormat
from bnplctl.errors import ExitCode
from bnplctl.importing.batch import BatchReport

_REJECTS_SHOWN = 20


def finish_batch(
    report: BatchReport,
    output: OutputFormat,
    *,
    rejects: Path | None,
    key_name: str,
    title: str,
    exit_on_rejects: bool = True,
) -> None:
    from bnplctl.cli.output import message, render_one, table_to_stderr
    from bnplctl.importing.batch import write_rejects

    if rejects is not None:
        write_rejects(rejects, report.rejected, key_name)
    summary = report.summary()
    if output is not OutputFormat.table:
        summary["rejected"] = [
            {"line": row.line, key_name: row.key, "outcome": row.outcome, "reason": row.reason}
            for row in report.rejected
        ]
    render_one(summary, output, title=title)
    if output is OutputFormat.table and report.rejected:
        shown = report.rejected[:_REJECTS_SHOWN]
        table_to_stderr(
            [
                {"line": row.line, key_name: row.key, "outcome": row.outcome, "reason": row.reason}
                for row in shown
            ],
            ["line", key_name, "outcome", "reason"],
            title="Rejected rows",
        )
        if len(report.rejected) > len(shown):
            message(f"… and {len(report.rejected) - len(shown)} more; use --rejects FILE for all")
    if rejects is not None:
        message(f"{len(report.rejected)} rejected row(s) written to {rejects}")
    if exit_on_rejects and report.has_rejections:
        raise typer.Exit(code=ExitCode.BATCH_REJECTED)
