"""Reporting a finished batch: the summary, the rejects, and exit 5 when any row was rejected."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from bnplctl.cli.options import OutputFormat, for_people
from bnplctl.errors import BnplError, ExitCode
from bnplctl.importing.batch import IngestReport, Rejected, RejectsFile

_REJECTS_SHOWN = 20
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def progress_size(source: str) -> int | None:
    """The size of a file large enough to deserve a progress bar; None otherwise (and
    for standard input, whose size is unknown)."""
    if source == "-":
        return None
    size = Path(source).stat().st_size
    return size if size >= PROGRESS_MIN_BYTES else None


def _rows(
    rejected: Sequence[Rejected], key_name: str, files: Sequence[str]
) -> list[dict[str, Any]]:
    """Rejected rows as records: ``file`` (of ``files``, by index), line, key, outcome,
    reason."""
    return [
        {
            "file": files[row.file_index] if row.file_index < len(files) else "-",
            "line": row.line,
            key_name: row.key,
            "outcome": row.outcome,
            "reason": row.reason,
        }
        for row in rejected
    ]


def _skipped_rows(skipped: Sequence[Rejected], files: Sequence[str]) -> list[dict[str, Any]]:
    """Skipped rows as records: ``file``, line, the processor's row ``type`` (kept as the
    row's key), why it was skipped (``reason``: fee, payout, ...)."""
    return [
        {
            "file": files[row.file_index] if row.file_index < len(files) else "-",
            "line": row.line,
            "type": row.key,
            "reason": row.reason,
        }
        for row in skipped
    ]


def show_rejects(
    shown: Sequence[Rejected],
    total: int,
    *,
    key_name: str,
    rejects: str | Path | None,
    title: str,
    files: Sequence[str],
) -> None:
    """The first rejected rows as a table on stderr (with the file when there were
    several), and where the rest went."""
    from bnplctl.cli.output import message, table_to_stderr

    if shown:
        columns = ["file"] if len(files) > 1 else []
        table_to_stderr(
            _rows(shown[:_REJECTS_SHOWN], key_name, files),
            [*columns, "line", key_name, "outcome", "reason"],
            title=title,
            drop=["reason", *columns],
            hint="-o json or --rejects FILE has every column",
        )
        if total > min(len(shown), _REJECTS_SHOWN):
            message(f"… and {total - min(len(shown), _REJECTS_SHOWN)} more; "
                    "use --rejects FILE for all")  # fmt: skip
    if rejects is not None:
        message(f"{total} row(s) written to {rejects}")


def render_summary(
    summary: dict[str, Any],
    rejected: Sequence[Rejected],
    output: OutputFormat,
    *,
    key_name: str,
    files: Sequence[str],
    title: str,
) -> None:
    """A batch's summary in every format: a table (the rejects follow on stderr); JSON
    with the ``rejected`` rows; CSV as one row of counts (rejected rows are the
    ``--rejects`` file's, never a list inside a cell)."""
    from bnplctl.cli.output import render_one

    if for_people(output):
        render_one(summary, output, title=title)
    elif output is OutputFormat.csv:
        render_one({k: v for k, v in summary.items() if not isinstance(v, list)}, output)
    else:
        render_one(summary | {"rejected": _rows(rejected, key_name, files)}, output)


def finish_batch(
    report: IngestReport,
    output: OutputFormat,
    *,
    rejects: RejectsFile | None,
    sources: Sequence[str],
    key_name: str,
    title: str,
    exit_on_rejects: bool = True,
    extra: dict[str, Any] | None = None,
    created: list[dict[str, Any]] | None = None,
    rows_streamed: bool = False,
) -> None:
    """A users import's end (of one file or several, ``sources``): the rejects file put
    in place (its rows were written as their chunks were committed), the summary (with
    ``extra`` after the counts), the first rejects, and exit 5 when any row was rejected.

    ``created`` (each created row's ``line`` and ``user_id``) is added to JSON as
    ``created_users``, and its first rows are listed on stderr under a table. With
    ``rows_streamed`` every row's outcome went to stdout already (``-o jsonl``/``csv``):
    the counts go to stderr instead of the summary."""
    from bnplctl.cli.output import message

    if rejects is not None:
        try:
            rejects.close()
        except BnplError as exc:  # every row was handled; only the rejects file failed
            if not (extra or {}).get("dry_run"):
                note_what_stays(exc, report.rows, report.applied, report.applied_as)
            raise
    summary = report.summary() | (extra or {})
    if rows_streamed:
        counts = ", ".join(f"{report.counts.get(name, 0)} {name}" for name in report.outcomes)
        message(f"{report.rows} row(s): {counts}")
    else:
        if created is not None and output is OutputFormat.json:
            summary["created_users"] = created
        render_summary(summary, report.shown, output, key_name=key_name, files=sources, title=title)
    if created and for_people(output):
        _show_created(created, key_name, several=len(sources) > 1)
    show_rejects(
        report.shown if for_people(output) else [],
        report.rejected_total,
        key_name=key_name,
        rejects=rejects.path if rejects is not None else None,
        title="Rejected rows",
        files=sources,
    )
    if exit_on_rejects and report.rejected_total:
        raise typer.Exit(code=ExitCode.BATCH_REJECTED)


def _show_created(created: list[dict[str, Any]], key_name: str, *, several: bool) -> None:
    """The first created rows as a table on stderr (with the file when there were
    several), and where the rest are."""
    from bnplctl.cli.output import message, table_to_stderr

    columns = ["file"] if several else []
    table_to_stderr(created[:_REJECTS_SHOWN], [*columns, "line", key_name], title="Created rows")
    if len(created) > _REJECTS_SHOWN:
        message(f"… and {len(created) - _REJECTS_SHOWN} more; -o csv or -o json lists them all")


@contextmanager
def outcome_said(report: IngestReport, *, dry_run: bool) -> Iterator[None]:
    """Around a batch's report, once every row is handled: when the report itself cannot
    be written (a full disk: 74; its reader gone: 141), the one line still says the rows
    stay handled, as for a stop midway."""
    try:
        yield
    except (BnplError, BrokenPipeError) as exc:
        if not dry_run and not getattr(exc, "__notes__", None):
            note_what_stays(exc, report.rows, report.applied, report.applied_as)
        raise


def note_what_stays(exc: BaseException, rows: int, done: int, done_word: str) -> None:
    """A batch stopped by an error keeps the chunks it committed before it: the error's
    one line says how many rows that was (``BoundaryGroup`` adds the note)."""
    if rows:
        exc.add_note(
            f"{rows} row(s) of this run's finished chunks stay handled ({done} {done_word},"
            f" {rows - done} not); run the file again to finish it (rows {done_word}"
            " already come back as duplicate)"
        )


def check_inputs(sources: list[str]) -> None:
    """Every named file must be there before anything is applied (exit 66 otherwise);
    standard input named twice is a path that may not be used (exit 2)."""
    from bnplctl.errors import InputFileError, UsageProblem

    if sources.count("-") > 1:
        raise UsageProblem("standard input (-) can be read only once")
    for source in sources:
        if source == "-":
            continue
        path = Path(source)
        if not path.exists():
            raise InputFileError(f"{source}: no such file")
        if path.is_dir():
            raise InputFileError(f"{source}: is a directory")


def run_files_command(
    sources: list[str],
    rejects: str | Path | None,
    output: OutputFormat,
    *,
    key_name: str,
    outcomes: tuple[str, ...],
    title: str,
    dry_run: bool,
    run: Any,
) -> None:
    """What ``webhooks ingest`` and ``payments import`` share: check the inputs, open the
    rejects file, ``run(report, progress_sizes)`` (which returns what the JSON summary
    adds), then the summary, the rejects, and exit 5 when any row was not applied."""
    check_inputs(sources)
    rejects_file = RejectsFile(rejects, key_name, sources) if rejects is not None else None
    report = IngestReport(outcomes, sink=rejects_file)
    failed = True
    try:
        extra = run(report, [(source, progress_size(source)) for source in sources])
        failed = False
    except BaseException as exc:
        if not dry_run:
            note_what_stays(exc, report.rows, report.counts.get("applied", 0), "applied")
        raise
    finally:  # what was rejected so far, also when a file failed midway
        if rejects_file is not None:
            try:
                rejects_file.finish(failed)
            except BnplError as exc:  # the rejects file failed after every row was handled
                if not dry_run:
                    note_what_stays(exc, report.rows, report.counts.get("applied", 0), "applied")
                raise
    summary = report.summary() | {"dry_run": dry_run} | extra
    if "skipped" in outcomes:  # a settlement report's fees and payouts: JSON lists them
        summary["skipped_rows"] = _skipped_rows(report.skipped, sources)
    title += " (dry run: nothing written)" if dry_run else ""
    if for_people(output):
        summary = {name: summary[name] for name in ("rows", *outcomes)}
    with outcome_said(report, dry_run=dry_run):
        render_summary(summary, report.shown, output, key_name=key_name, files=sources, title=title)
        show_rejects(
            report.shown if for_people(output) else [],
            report.rejected_total,
            key_name=key_name,
            rejects=rejects,
            title="Rows not applied",
            files=sources,
        )
    if report.rejected_total:
        raise typer.Exit(ExitCode.BATCH_REJECTED)
