"""``bnplctl webhooks``: ingest merchant refund-status files; see what was loaded."""

from typing import Annotated, Any

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import (
    AllOption,
    DryRunOption,
    FilesArgument,
    FormatOption,
    InputFormat,
    LimitOption,
    OutputFormat,
    OutputOption,
    rejects_option,
)

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
    sources: FilesArgument,
    input_format: FormatOption = InputFormat.auto,
    rejects: Annotated[str | None, rejects_option("refund_id")] = None,
    dry_run: DryRunOption = False,
    output: OutputOption = OutputFormat.table,
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FIELD=COLUMN",
            help="Read FIELD (refund_id, status, ...) from the file's COLUMN; repeatable.",
        ),
    ] = None,
) -> None:
    """Apply refund-status updates: approved -> APPROVED (then applied to the plan),
    rejected/failed -> REJECTED, processing -> stays PENDING.

    Each row gets one outcome: applied, duplicate, stale, conflict, unknown_refund or
    invalid. Valid rows are applied even when others are not; exit 0 when every row
    was applied, 5 otherwise. Files are processed in chunks, one transaction each.

    Example: bnplctl webhooks ingest day1.csv day2.jsonl --rejects rejects.csv

    Example: bnplctl webhooks ingest shop.csv --map refund_id=Ref --map status=State
    """  # fmt: skip
    from bnplctl.cli.batch import run_files_command
    from bnplctl.cli.output import byte_progress
    from bnplctl.importing.webhooks import OUTCOMES, WEBHOOK_FIELDS, ingest_files

    mapping: dict[str, str] = {}
    if column_map:
        from bnplctl.importing.presets import parse_column_map

        mapping = parse_column_map(column_map, fields=WEBHOOK_FIELDS, one_field_a_column=True)

    def run(report: Any, sized: list[tuple[str, int | None]]) -> dict[str, Any]:
        files = ingest_files(
            sized,
            input_format.value,
            report,
            context=app_context(),
            dry_run=dry_run,
            progress=byte_progress,
            column_map=mapping,
        )
        return {"files": files}

    run_files_command(
        sources,
        rejects,
        output,
        key_name="refund_id",
        outcomes=OUTCOMES,
        title="Webhook ingest",
        dry_run=dry_run,
        run=run,
    )


@app.command("files")
def files(
    limit: LimitOption = None,
    every: AllOption = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The webhook files ingested so far, newest first: name, counts, when, who, checksum.

    Example: bnplctl webhooks files --limit 5

    Example: bnplctl webhooks files -o csv
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.importing.ledger import list_files
    from bnplctl.importing.webhooks import FILES

    with app_context().db.unit() as work:
        connection = work.connection
        shown = list_files(connection, FILES, list_request(limit, every, None))
        render_list(
            shown, output, columns=FILE_COLUMNS, title="Ingested webhook files", drop=FILE_DROP
        )
        report_cut(shown)
