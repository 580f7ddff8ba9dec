"""Shared Typer option types. Imports nothing heavy: these load for ``--help``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

# The largest --limit: more rows than any list shows, and within PostgreSQL's bigint.
MAX_LIMIT = 1_000_000_000


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


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
        help="table for people; json, jsonl or csv for programs.",
        case_sensitive=False,
    ),
]

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
