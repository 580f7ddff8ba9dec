"""Shared Typer option types. Imports nothing heavy: these load for ``--help``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

# The largest --limit: more rows than any list shows, and within PostgreSQL's bigint.
MAX_LIMIT = 1_000_000_000


class OutputFormat(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def for_people(fmt: OutputFormat) -> bool:
    """A table (narrow or wide), not a format for programs."""
    return fmt in (OutputFormat.table, OutputFormat.wide)


class InputFormat(StrEnum):
    auto = "auto"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="table for people (wide: every column, whatever the terminal's width);"
        " json, jsonl or csv for programs.",
        case_sensitive=False,
    ),
]

# The files of a batch command, and what it can leave out or write aside.
FilesArgument = Annotated[
    list[str],
    typer.Argument(metavar="FILE|-", help="CSV, JSON array or JSON lines files; - = stdin."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Report the outcomes; write nothing.")
]


def rejects_option(key_name: str) -> Any:
    """The ``--rejects PATH`` option of a batch command whose rows are named by
    ``key_name`` (for ``Annotated[Path | None, rejects_option(...)]``)."""
    return typer.Option(
        "--rejects",
        metavar="PATH",
        help=f"Write the rows not applied (line, {key_name}, outcome, reason) as CSV.",
    )


FormatOption = Annotated[
    InputFormat,
    typer.Option(
        "--format",
        help="Input format; auto decides by extension, then by content.",
        case_sensitive=False,
    ),
]

IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Run this request once: a repeat with the same key returns the first result.",
    ),
]

# Checked by cli.lists.list_request (1 to MAX_LIMIT): a range here would put Python's
# "1<=x<=1000000000" into the help.
LimitOption = Annotated[
    int | None,
    typer.Option("--limit", metavar="N", help="Show at most N rows (default 100)."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Show every row, however many.")]


def sort_option(fields: tuple[str, ...]) -> Any:
    """``--sort FIELD`` over a list's sortable ``fields``; ``-FIELD`` sorts descending."""
    return typer.Option(
        "--sort",
        metavar="FIELD",
        help=f"Order by {', '.join(fields)}; -FIELD for descending.",
    )


# For cron: the command opens its log itself (a shell redirect fails when the directory is
# missing); its outcome goes there, one JSON line a run, nothing to stdout or stderr.
LogFileOption = Annotated[
    str | None,  # as typed: a Path would turn "" into "." and drop a trailing "/"
    typer.Option(
        "--log-file",
        metavar="PATH",
        help="Append this run's outcome to PATH as one JSON line (ts, level, message,"
        " exit_code, the result) instead of printing it; missing directories are made"
        " (mode 0750). For cron.",
    ),
]
