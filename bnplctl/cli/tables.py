"""How a table for a person is laid out: what kind each field is, how a cell of that
kind reads, and which columns a narrow terminal drops.

The kind of a field follows from its name, the same in every table: ids, statuses,
dates, timestamps and amounts never wrap inside a cell (a person copies them); only
free text (names, reasons, details) may. Timestamps read in the business time zone to
the minute; money is right-aligned and labelled with ``BNPL_CURRENCY`` when it is set.
Machine formats (json, jsonl, csv) never come through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bnplctl.cli.context import app_context

# Free text: the only cells that may wrap.
TEXT_FIELDS = frozenset(
    {
        "full_name",
        "reason",
        "decision_reason",
        "details",
        "merchant_reference",
        "file",
        "actor",
        "error",
        "about",
        "source",
        "narrative",
    }
)
MONEY_FIELDS = frozenset(
    {
        "amount",
        "amount_due",
        "total_amount",
        "total_debt",
        "overdue_amount",
        "outstanding_amount",
        "applied_amount",
        "payout_amount",
        "to_clear",
        "reversed",
    }
)
STATUS_FIELDS = frozenset({"status", "outcome"})
# One colour per status, whatever the entity: green is settled or fine, yellow waits on
# someone, red needs attention, dim is closed without effect.
STATUS_STYLES = {
    "NORMAL": "green",
    "DEBT_USER": "bold red",
    "ACTIVE": "cyan",
    "COMPLETED": "green",
    "UPCOMING": "cyan",
    "OVERDUE": "bold red",
    "PAID": "green",
    "PENDING": "yellow",
    "APPROVED": "green",
    "REJECTED": "dim",
    "CANCELLED": "dim",
    "RUNNING": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "bold red",
    "REVERTED": "dim",
    "applied": "green",
    "created": "green",
    "duplicate": "dim",
    "stale": "dim",
    "conflict": "yellow",
    "invalid": "red",
    "unknown_refund": "red",
    "unknown_user": "red",
    "unknown_installment": "red",
    "overpayment": "yellow",
}
# A free-text column is squeezed to its longest word, within these bounds, before a
# column is dropped instead (a longer word folds).
TEXT_MIN_WIDTH = 12
TEXT_WORD_CAP = 24
# A Rich table with the default box: one border per column plus one, a space each side.
_BORDER = 1
_PADDING = 2


def kind_of(name: str) -> str:
    """``text``, ``money``, ``status``, ``time``, ``date`` or ``key`` (never wraps)."""
    if name in TEXT_FIELDS:
        return "text"
    if name in MONEY_FIELDS:
        return "money"
    if name in STATUS_FIELDS:
        return "status"
    if name.endswith("_at"):
        return "time"
    if name.endswith("_date") or name == "date_of_birth":
        return "date"
    return "key"


def _settings() -> tuple[str, str | None]:

    settings = app_context().settings
    return settings.timezone, settings.currency


def header(name: str) -> str:
    """A column's header: money carries the currency when ``BNPL_CURRENCY`` is set."""
    currency = _settings()[1] if kind_of(name) == "money" else None
    return f"{name} ({currency})" if currency else name


def local_minute(value: str) -> str:
    """An ISO 8601 timestamp as ``2026-12-02 11:55`` in the business time zone; anything
    else unchanged, and so is a moment that zone cannot show (9999-12-31 23:59 UTC is
    year 10000 in Pacific/Kiritimati): a stored value never makes a table fail."""
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    try:
        local = moment.astimezone(ZoneInfo(_settings()[0]))
    except (OverflowError, ValueError):
        return value
    return f"{local.date().isoformat()} {local:%H:%M}"  # strftime writes year 1 as "1"


def cell_text(name: str, value: Any, plain: str) -> str:
    """What a cell shows: ``plain`` (the value as text), with timestamps localised."""
    if isinstance(value, str) and kind_of(name) == "time":
        return local_minute(value)
    return plain


def justify(name: str, values: Sequence[Any]) -> str:
    """Money and counts are right-aligned, so that their digits line up."""
    if kind_of(name) == "money":
        return "right"
    numbers = [value for value in values if value is not None]
    if numbers and all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
        return (
            "right"
            if name not in ("id", "sequence", "line") and not name.endswith("_id")
            else "left"
        )
    return "left"


@dataclass(frozen=True)
class Layout:
    """The columns a table shows at a width, each with the width it must not go under."""

    names: tuple[str, ...]
    min_widths: Mapping[str, int]
    dropped: tuple[str, ...]

    @property
    def width(self) -> int:
        return total_width(self.min_widths.values())


def total_width(widths: Iterable[int]) -> int:
    listed = list(widths)
    return sum(listed) + len(listed) * (_BORDER + _PADDING) + _BORDER


def _longest_word(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(word) for word in text.split()), default=0)


def _longest_line(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def fit(
    names: Sequence[str],
    cells: Sequence[Mapping[str, str]],
    width: int | None,
    drop: Sequence[str] = (),
    *,
    wide: bool = False,
) -> Layout:
    """The columns that fit in ``width`` (None: all): a key column is as wide as its
    widest cell, a text column as its longest word or header (within ``TEXT_MIN_WIDTH``
    and ``TEXT_WORD_CAP``; ``wide``: its longest line); while the table is too wide, the
    next column of ``drop`` goes."""
    from rich.cells import cell_len

    minimum: dict[str, int] = {}
    for name in names:
        head = cell_len(header(name))
        if kind_of(name) == "text":
            longest = max((_longest_line(row.get(name, "")) for row in cells), default=0)
            word = max((_longest_word(row.get(name, "")) for row in cells), default=0)
            floor = max(min(max(word, head), TEXT_WORD_CAP), TEXT_MIN_WIDTH)
            minimum[name] = max(longest if wide else min(longest, floor), min(head, floor))
        else:
            widest = max((_longest_line(row.get(name, "")) for row in cells), default=0)
            minimum[name] = max(widest, head)
    shown = list(names)
    dropped: list[str] = []
    for name in drop:
        if width is None or total_width(minimum[n] for n in shown) <= width:
            break
        if name in shown and len(shown) > 1:
            shown.remove(name)
            dropped.append(name)
    return Layout(
        names=tuple(shown),
        min_widths={name: minimum[name] for name in shown},
        dropped=tuple(dropped),
    )
