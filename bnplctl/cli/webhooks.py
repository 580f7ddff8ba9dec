"""``bnplctl webhooks``: ingest merchant refund-status files; see what was loaded."""

from pathlib import Path
from typing import Annotated

import typer

from bnplctl.cli.options import (
    AllOption,
    FormatOption,
    InputFormat,
    LimitOption,
    OutputFormat,
    OutputOption,
    for_people,
)
from bnplctl.errors import ExitCode

app = typer.Typer(
    help="Merchant refund-status webhook files.\n\n"
    "Example: bnplctl webhooks ingest updates.csv --rejects rejects.csv",
    rich_markup_mode=None,
)

FILE_COLUMNS = (
    "id",
    "file",
    "rows",
    "applied",
    "duplicate",
    "stale",
    "conflict",
    "unknown_refund",
    "invalid",
    "started_at",
    "finished_at",
    "actor",
    "sha256",
)
FILE_DROP = ("sha256", "actor", "started_at", "stale", "duplicate", "unknown_refund", "conflict")


@app.command("ingest")
def ingest(
    sources: Annotated[
        list[str],
        typer.Argument(metavar="FILE|-", help="CSV, JSON array or JSON lines files; - = stdin."),
    ],
    input_format: FormatOption = InputFormat.auto,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            help="Write the rows not applied (line, refund_id, outcome, reason) as CSV.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the outcomes; write nothing.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Apply refund-status updates: approved -> APPROVED (then applied to the plan),
    rejected/failed -> REJECTED, processing -> stays PENDING.

    Each row gets one outcome: applied, duplicate, stale, conflict, unknown_refund or
    invalid. Valid rows are applied even when others are not; exit 0 when every row
    was applied, 5 otherwise. Files are processed in chunks, one transaction each.

    Example: bnplctl webhooks ingest day1.csv day2.jsonl --rejects rejects.csv
    """  # fmt: skip
    from bnplctl.cli.app import current_actor
    from bnplctl.cli.batch import progress_size, render_summary, show_rejects
    from bnplctl.cli.output import byte_progress
    from bnplctl.importing.batch import RejectsFile
    from bnplctl.importing.webhooks import OUTCOMES, IngestReport, ingest_files

    check_inputs(sources)
    rejects_file = RejectsFile(rejects, "refund_id", sources) if rejects is not None else None
    report = IngestReport(sink=rejects_file)
    failed = True
    try:
        files = ingest_files(
            [(source, progress_size(source)) for source in sources],
            input_format.value,
            report,
            actor=current_actor(),
            dry_run=dry_run,
            progress=byte_progress,
        )
        failed = False
    finally:  # what was rejected so far, also when a file failed midway
        if rejects_file is not None:
            rejects_file.finish(failed)
    summary = report.summary() | {"dry_run": dry_run, "files": files}
    title = "Webhook ingest" + (" (dry run: nothing written)" if dry_run else "")
    if for_people(output):
        summary = {name: summary[name] for name in ("rows", *OUTCOMES)}
    render_summary(summary, report.shown, output, key_name="refund_id", files=sources, title=title)
    show_rejects(
        report.shown if for_people(output) else [],
        report.rejected_total,
        key_name="refund_id",
        rejects=rejects,
        title="Rows not applied",
        files=sources,
    )
    if report.rejected_total:
        raise typer.Exit(ExitCode.BATCH_REJECTED)


def check_inputs(sources: list[str]) -> None:
    """Every named file must be there before anything is applied (exit 66 otherwise)."""
    from bnplctl.errors import InputFileError, InvalidInput

    if sources.count("-") > 1:
        raise InvalidInput("standard input (-) can be read only once")
    for source in sources:
        if source == "-":
            continue
        path = Path(source)
        if not path.exists():
            raise InputFileError(f"{source}: no such file")
        if path.is_dir():
            raise InputFileError(f"{source}: is a directory")


@app.command("files")
def files(
    limit: LimitOption = None,
    every: AllOption = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The files ingested so far, newest first: name, counts, when, who, checksum.

    Example: bnplctl webhooks files --limit 5

    Example: bnplctl webhooks files -o csv
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.db import connection_scope
    from bnplctl.importing.webhooks import list_files

    with connection_scope() as connection:
        shown = list_files(connection, list_request(limit, every, None))
        render_list(
            shown, output, columns=FILE_COLUMNS, title="Ingested webhook files", drop=FILE_DROP
        )
        report_cut(shown)
