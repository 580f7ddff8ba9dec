"""Shared Typer option types. Imports nothing heavy: these load for ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

import typer

from bnplctl.cli.context import app_context

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


# --- option values, checked as they are parsed ------------------------------------------
#
# Each checker is the same function that checks a file's field (``validators``,
# ``money``); here its failure is a usage error, exit 2, that click words with the
# option's name: "Invalid value for '--as-of': must be a date written YYYY-MM-DD". The
# reason never carries the value (no personal data goes through these options anyway).


def _checked(check: Callable[[str], Any], word: str) -> Callable[[Any], Any]:
    """``check`` as a click parser: its ``InvalidInput`` becomes ``BadParameter``."""

    def parse(raw: Any) -> Any:
        if not isinstance(raw, str):  # a default, or a value parsed already
            return raw
        from bnplctl.errors import InvalidInput

        try:
            return check(raw)
        except InvalidInput as exc:
            _, _, reason = exc.message.partition(": ")
            raise typer.BadParameter(reason or exc.message) from None

    parse.__name__ = word.lower()
    return parse


def _event_date(raw: str) -> Any:
    from bnplctl.validators import event_date

    return event_date(raw, "date")


def _birth_date(raw: str) -> Any:
    from bnplctl import pii
    from bnplctl.validators import parse_date

    return pii.check_adult(parse_date(raw, "dob"), app_context().clock.today())


def _since(raw: str) -> Any:
    from bnplctl.validators import since_moment

    return since_moment(raw)


def _amount(raw: str) -> Any:
    from bnplctl.money import parse_amount

    return parse_amount(raw)


def _installments(raw: str) -> int:
    from bnplctl.errors import InvalidInput
    from bnplctl.money import MAX_INSTALLMENTS

    if not raw.strip().isascii() or not raw.strip().isdigit():
        raise InvalidInput("installments: a whole number")
    count = int(raw)
    if not 1 <= count <= MAX_INSTALLMENTS:
        raise InvalidInput(f"installments: must be between 1 and {MAX_INSTALLMENTS}")
    return count


def _reference(raw: str) -> str:
    from bnplctl.validators import reference

    return reference(raw, "id")


def _optional_reference(raw: str) -> str | None:
    """A reference that may be left blank (``--merchant-reference ""``: none)."""
    return _reference(raw) if raw.strip() else None


def _idempotency_key(raw: str) -> str:
    from bnplctl.validators import idempotency_key

    return idempotency_key(raw)


def _new_user_id(raw: str) -> str | None:
    from bnplctl.validators import new_user_id

    return new_user_id(raw) if raw.strip() else None


def _free_text(raw: str) -> str | None:
    from bnplctl.validators import free_text

    return free_text(raw, "reason")


_KINDS: dict[str, tuple[Callable[[str], Any], str]] = {
    "date": (_event_date, "DATE"),
    "birth_date": (_birth_date, "DATE"),
    "since": (_since, "WHEN"),
    "amount": (_amount, "AMOUNT"),
    "installments": (_installments, "N"),
    "user": (_reference, "USER_ID"),
    "new_user": (_new_user_id, "USER_ID"),
    "transaction_id": (_reference, "TRANSACTION_ID"),
    "reference": (_reference, "REFERENCE"),
    "merchant_reference": (_optional_reference, "REFERENCE"),
    "idempotency_key": (_idempotency_key, "KEY"),
    "free_text": (_free_text, "TEXT"),
}


def checked_option(name: str, kind: str, help: str, **settings: Any) -> Any:
    """``typer.Option(name)`` whose value is checked as it is parsed (a malformed one is
    exit 2 naming the option) and shown in help as what it takes (``DATE``, ``AMOUNT``).
    ``kind``: one of ``_KINDS``; the parameter gets the checked value (``date``,
    ``datetime``, ``Decimal``, ``int`` or ``str``)."""
    check, word = _KINDS[kind]
    return typer.Option(name, parser=_checked(check, word), metavar=word, help=help, **settings)


def checked_argument(kind: str, metavar: str, help: str) -> Any:
    """``typer.Argument`` checked as ``checked_option`` checks an option's value."""
    check, _ = _KINDS[kind]
    return typer.Argument(parser=_checked(check, metavar), metavar=metavar, help=help)


IdempotencyKeyOption = Annotated[
    str | None,
    checked_option(
        "--idempotency-key",
        "idempotency_key",
        "Run this request once: a repeat with the same key returns the first result.",
    ),
]
AsOfOption = Annotated[
    date | None,
    checked_option(
        "--as-of", "date", "Business date YYYY-MM-DD (default: today in BNPL_TIMEZONE)."
    ),
]

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
