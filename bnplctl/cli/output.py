"""The one place that renders: Rich tables for people, json/jsonl/csv for programs.

Records arrive already masked and JSON-ready (strings, numbers, booleans, None,
lists and dicts of those). Data goes to stdout; messages to stderr.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import cache, wraps
from typing import IO, TYPE_CHECKING, Any, ParamSpec

from bnplctl.cli.options import OutputFormat
from bnplctl.cli.streams import silence_stdout, utf_capable
from bnplctl.validators import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from bnplctl.joblog import JobLog

Record = Mapping[str, Any]
P = ParamSpec("P")
# Wide enough that nothing is cut when stdout is a file or a pipe.
_UNBOUNDED_WIDTH = 100_000


def _text(value: Any) -> Text:
    """A table cell or title as plain text: data is never read as Rich markup (a name
    like ``Ann [/b] Lee`` would otherwise be mangled or fail to render)."""
    from rich.text import Text

    return Text(printable(value if isinstance(value, str) else _cell(value)))


class _StderrThatNeverFails(io.TextIOBase):
    """Standard error as messages reach it: when it is closed (``2>&-``) or cannot take
    them (a full disk under the log), they are lost, and the command keeps its own exit
    code instead of failing on its messages."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        with suppress(OSError, ValueError, AttributeError):
            self.stream.write(text)  # type: ignore[union-attr]
        return len(text)

    def flush(self) -> None:
        with suppress(OSError, ValueError, AttributeError):
            self.stream.flush()  # type: ignore[union-attr]

    def isatty(self) -> bool:
        with suppress(OSError, ValueError, AttributeError):
            return bool(self.stream.isatty())  # type: ignore[union-attr]
        return False


def _stdout() -> Any:
    """The run's standard output (``Context.stdout``; the process's before the root has
    built the context, and None when it was started closed): the one place output goes."""
    from bnplctl.cli.context import running_context

    context = running_context()
    return context.out if context is not None else sys.stdout


def _stderr() -> Any:
    """The run's standard error (``Context.stderr``), as ``_stdout``."""
    from bnplctl.cli.context import running_context

    context = running_context()
    return context.err if context is not None else sys.stderr


def prompt(text: str) -> None:
    """A question at the terminal, or what goes around it, on stderr as typed (``users
    add`` asks for a value left out); never a value typed."""
    stream = _stderr()
    stream.write(text)
    stream.flush()


def _console(stderr: bool = False, width: int | None = None) -> Console:
    stream: Any = _StderrThatNeverFails(_stderr()) if stderr else _stdout()
    if width is None and not stream.isatty():
        # A file or a pipe: as wide as the rows need, unless COLUMNS says otherwise
        # (``COLUMNS=80 bnplctl users list | less``).
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else _UNBOUNDED_WIDTH
    return _console_class()(file=stream, width=width, highlight=False, soft_wrap=stderr)


@cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class PipedConsole(Console):
        """Rich exits 1 on its own when the reader of stdout goes away (``… | head``); the
        error boundary decides instead, as for every other format."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return PipedConsole


def to_stdout(render: Callable[P, None]) -> Callable[P, None]:
    """A renderer whose output reaches stdout before it returns: a write that fails (a
    full disk) becomes a one-line error and exit 74, not an internal error; a reader that
    went away (``| head``) is left to the error boundary (exit 141)."""

    @wraps(render)
    def rendered(*args: P.args, **kwargs: P.kwargs) -> None:
        from bnplctl.errors import OutputError

        if _stdout() is None:  # started with standard output closed (``>&-``)
            raise OutputError("cannot write the output (standard output is closed)")
        try:
            render(*args, **kwargs)
            _stdout().flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            silence_stdout()  # the interpreter's own flush at exit would fail again
            reason = exc.strerror or type(exc).__name__
            raise OutputError(f"cannot write the output ({reason})") from None

    return rendered


def _json_default(value: Any) -> str:
    return str(value)


def _dumps(value: Any, indent: int | None = None, stream: Any = None) -> str:
    """``value`` as JSON for ``stream`` (the run's stdout unless given: a writer of many
    records looks it up once). On one that cannot encode every character (a latin-1
    locale, PYTHONIOENCODING), JSON escapes them (\u041c) and stays valid, instead of
    failing on a Cyrillic name."""
    out = _stdout() if stream is None else stream
    ascii_only = not utf_capable(getattr(out, "encoding", None))
    return json.dumps(value, indent=indent, ensure_ascii=ascii_only, default=_json_default)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "  ".join(f"{key}={_cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return _dumps(value)
    return str(value)


@to_stdout
def render_list(
    records: Iterable[Record],
    fmt: OutputFormat,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    drop: Sequence[str] | None = None,
) -> None:
    """A list: a table (``drop``: the columns a narrow terminal loses first), a JSON
    array, JSON lines, or CSV with a header. The last three
    are written as the records arrive, so an export of any size takes flat memory; a
    table needs them all (its column widths)."""
    rows = iter(records)
    first = next(rows, None)
    names = list(columns or (first.keys() if first is not None else []))
    stream = itertools.chain([first], rows) if first is not None else iter(())
    if fmt is OutputFormat.json:
        _write_json_array(stream)
    elif fmt in (OutputFormat.jsonl, OutputFormat.csv):
        record_writer(fmt, names)(stream)
    else:
        _table(list(stream), names, title=title, drop=drop, wide=fmt is OutputFormat.wide)


def record_writer(fmt: OutputFormat, names: Sequence[str]) -> Callable[[Iterable[Record]], None]:
    """A writer of records to stdout, as JSON lines or CSV (its header before the first
    records), called as often as records come: a batch streams each chunk's rows."""
    from bnplctl.validators import spreadsheet_safe

    if fmt is OutputFormat.jsonl:

        @to_stdout
        def write_lines(records: Iterable[Record]) -> None:
            out = _stdout()
            for record in records:
                out.write(_dumps(dict(record), stream=out) + "\n")

        return write_lines
    writer = csv.writer(_stdout(), lineterminator="\n")
    safe = [name not in _FIXED_FORMAT for name in names]
    header = [list(names)]

    @to_stdout
    def write_rows(records: Iterable[Record]) -> None:
        """CSV for a spreadsheet as much as for a script: a text cell that a spreadsheet
        would run as a formula gets a leading ``'`` (PRODUCT.md, "CSV the tool writes")."""
        if header:
            writer.writerow(header.pop())
        for record in records:
            writer.writerow(
                [
                    spreadsheet_safe(_cell(record.get(name))) if neutralise
                    else _cell(record.get(name))
                    for name, neutralise in zip(names, safe, strict=True)
                ]
            )  # fmt: skip

    return write_rows


def _write_json_array(records: Iterator[Record]) -> None:
    """What ``json.dumps(list(records), indent=2)`` writes, one record at a time."""
    out = _stdout()
    separator = "[\n"
    for record in records:
        out.write(separator + textwrap.indent(_dumps(dict(record), 2, out), "  "))
        separator = ",\n"
    out.write("[]\n" if separator == "[\n" else "\n]\n")


@to_stdout
def render_one(record: Record, fmt: OutputFormat, *, title: str | None = None) -> None:
    """One entity or summary: a two-column table, a JSON object, one line, or CSV (with
    ``--log-file``: into the run's line there)."""
    log = _job_log()
    if log is not None:
        log.result = json.loads(_dumps(dict(record)))
        return
    if fmt is OutputFormat.json:
        _stdout().write(_dumps(dict(record), indent=2) + "\n")
    elif fmt is OutputFormat.jsonl:
        _stdout().write(_dumps(dict(record)) + "\n")
    elif fmt is OutputFormat.csv:
        _write_csv([record], list(record.keys()))
    else:
        from rich.table import Table

        from bnplctl.cli.tables import cell_text, header

        table = Table(show_header=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in record.items():
            table.add_row(_text(header(name)), _styled(name, cell_text(name, value, _plain(value))))
        _print_table(_console(), table, title)


@to_stdout
def render_nested(
    record: Record,
    fmt: OutputFormat,
    *,
    child_key: str,
    child_columns: Sequence[str],
    title: str,
    child_title: str,
    parent: tuple[str, Any] | None = None,
    child_drop: Sequence[str] | None = None,
) -> None:
    """An entity with a list inside (a plan and its installments).

    Tables show the entity, then its children; CSV has one row per child, led by
    the ``parent`` column when given; JSON keeps the nesting.
    """
    children: Sequence[Record] = record.get(child_key) or []
    if fmt in (OutputFormat.json, OutputFormat.jsonl):
        render_one(record, fmt)
    elif fmt is OutputFormat.csv:
        lead = {parent[0]: parent[1]} if parent else {}
        _write_csv([lead | dict(child) for child in children], [*lead, *child_columns])
    else:
        header = {name: value for name, value in record.items() if name != child_key}
        render_one(header, fmt, title=title)
        wide = fmt is OutputFormat.wide
        _table(children, child_columns, title=child_title, drop=child_drop, wide=wide)


@to_stdout
def render_story(
    record: Record,
    fmt: OutputFormat,
    *,
    narrative: str,
    sections: Sequence[tuple[str, Sequence[Record], Sequence[str]]],
    parent: tuple[str, Any],
) -> None:
    """An explanation: for a person, a short narrative, then a table per section
    (``(title, rows, columns)``, an empty one left out); JSON is ``record``; CSV is the
    rows of the first section, led by the ``parent`` column."""
    if fmt in (OutputFormat.json, OutputFormat.jsonl):
        render_one(record, fmt)
        return
    if fmt is OutputFormat.csv:
        _, rows, columns = sections[0]
        lead = {parent[0]: parent[1]}
        _write_csv([lead | dict(row) for row in rows], [*lead, *columns])
        return
    _console().print(_text(narrative))
    for title, rows, columns in sections:
        if rows:
            _table(rows, columns, title=title, wide=fmt is OutputFormat.wide)


@to_stdout
def render_dashboard(report: Record) -> None:
    """The status report as a Rich panel: one line per area, problems in red."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    database = report["database"]
    if database.get("reachable"):
        grid.add_row("database", f"reachable, PostgreSQL {database.get('version')}")
    else:
        grid.add_row("database", f"[red]unreachable[/red]: {escape(str(database.get('error')))}")
    migrations = report["migrations"]
    at_head = "[green]at head[/green]" if migrations.get("at_head") else "[red]not at head[/red]"
    grid.add_row(
        "migrations",
        f"{migrations.get('revision') or 'none'} / head {migrations.get('head')}: {at_head}",
    )
    for area in ("users", "plans", "refunds"):
        if area in report:
            grid.add_row(area, ", ".join(f"{k} {v}" for k, v in report[area].items()))
    if "installments" in report:
        overdue = report["installments"]
        grid.add_row("overdue", f"{overdue['overdue']} installments, {overdue['overdue_amount']}")
    if "last_sweep" in report:
        last = report["last_sweep"]
        if last is None:
            grid.add_row("last sweep", "[yellow]never[/yellow]")
        else:
            style = "green" if last["outcome"] == "SUCCEEDED" else "yellow"
            grid.add_row(
                "last sweep",
                f"[{style}]{last['outcome']}[/{style}] for {last['business_date']}, "
                f"{last['age_hours']} h ago (run {last['run_id']})",
            )
    if "secret_key" in report:
        key = report["secret_key"]
        style = "green" if key["state"] in ("matches", "none yet") else "yellow"
        exposed = ", [yellow]readable by others[/yellow]" if key["exposed"] else ""
        where = escape(key["file"]) if key["file"] else "BNPL_SECRET_KEY_FILE unset"
        grid.add_row("secret key", f"[{style}]{key['state']}[/{style}] ({where}){exposed}")
        if key.get("keys"):
            grid.add_row("keys", escape(key["keys"]))
    for problem in report.get("problems", []):
        grid.add_row("[red]problem[/red]", escape(problem))
    for note in report.get("notes", []):
        grid.add_row("[yellow]note[/yellow]", escape(note))
    healthy = report.get("healthy")
    title = "[green]healthy[/green]" if healthy else "[red]unhealthy[/red]"
    _console().print(Panel(grid, title=f"bnplctl status: {title}", expand=False))


# Columns whose format the tool fixes and that may start like a formula (``+998****4567``).
_FIXED_FORMAT = frozenset({"phone_number"})


def _write_csv(records: Iterable[Record], names: Sequence[str]) -> None:
    record_writer(OutputFormat.csv, names)(records)


def _table(
    records: Sequence[Record],
    names: Sequence[str],
    *,
    title: str | None = None,
    stderr: bool = False,
    drop: Sequence[str] | None = None,
    wide: bool = False,
    hint: str = "-o wide shows all",
) -> None:
    """A table laid out by ``tables``: ids, statuses, dates and amounts never wrap; at a
    narrow terminal the columns of ``drop`` go first (by default the rightmost ones,
    never the first); ``wide`` keeps them all, wider than the terminal if need be. When
    the columns that are left still do not fit, their values fold rather than be cut."""
    from rich.table import Table

    from bnplctl.cli import tables

    console = _console(stderr=stderr)
    cells = [
        {name: tables.cell_text(name, record.get(name), _plain(record.get(name))) for name in names}
        for record in records
    ]
    terminal = None if console.width >= _UNBOUNDED_WIDTH or wide else console.width
    order = list(drop) if drop is not None else list(reversed(names[1:]))
    layout = tables.fit(names, cells, terminal, order, wide=wide)
    if wide and layout.width > console.width:
        console = _console(stderr=stderr, width=layout.width)
    squeezed = terminal is not None and layout.width > terminal
    table = Table()
    for name in layout.names:
        column = [record.get(name) for record in records]
        text = tables.kind_of(name) == "text"
        table.add_column(
            _text(tables.header(name)),
            justify=tables.justify(name, column),  # type: ignore[arg-type]
            no_wrap=not text and not squeezed,
            min_width=None if (text and not wide) or squeezed else layout.min_widths[name],
            overflow="fold",
        )
    for row in cells:
        table.add_row(*(_styled(name, row[name]) for name in layout.names))
    if not records:
        table.caption = "no rows"
    elif layout.dropped:
        # The hint first: a long list of columns wraps, and the hint must stay whole.
        shown_where = f" ({hint})" if hint else ""
        table.caption = f"not shown at this width{shown_where}: {', '.join(layout.dropped)}"
    _print_table(console, table, title)


def _plain(value: Any) -> str:
    """A cell for a person: a mapping (audit details) one ``key: value`` per line (a
    narrow column breaks at the space, keeping a date or an amount whole)."""
    if isinstance(value, dict):
        return "\n".join(f"{key}: {printable(_cell(item))}" for key, item in value.items())
    return printable(value if isinstance(value, str) else _cell(value))


def _styled(name: str, plain: str) -> Text:
    """A cell as plain text (never read as markup), a status in its colour."""
    from rich.text import Text

    from bnplctl.cli.tables import STATUS_STYLES, kind_of

    style = STATUS_STYLES.get(plain, "") if kind_of(name) == "status" else ""
    return Text(plain, style=style)


def _print_table(console: Console, table: Any, title: str | None) -> None:
    """The title on a line of its own, then the table: a title inside a Rich table is
    wrapped to the table's width (a narrow summary split its title over three lines)
    and padded to it."""
    if title:
        console.print(_text(title), style="table.title")
    console.print(table)


def table_to_stderr(
    records: Sequence[Record],
    names: Sequence[str],
    *,
    title: str,
    drop: Sequence[str] = (),
    hint: str = "",
) -> None:
    """A table for the operator that is not data (rejects): only the columns of
    ``drop`` may go at a narrow terminal (``hint`` says where they are); ``-o wide``
    does not apply."""
    _table(records, names, title=title, stderr=True, drop=drop, hint=hint)


def _stderr_is_terminal() -> bool:
    return bool(_stderr().isatty())


@contextmanager
def byte_progress(total: int | None, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a large file, only when stderr is a terminal.

    Redrawn as bytes are read, with no refresh thread of its own: ``users import``
    forks its worker processes while the bar is shown, and a fork must not happen
    while another thread may hold a lock.
    """
    if total is None:
        yield None
        return
    with _progress_bar(label, total, "bytes") as update:
        yield None if update is None else lambda count: update(count, None)


@contextmanager
def row_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of rows done out of a total on stderr, only when stderr is a
    terminal (``keys rotate``)."""
    with _progress_bar(label, None, "rows") as update:
        yield None if update is None else lambda done, total: update(done, total)


@contextmanager
def _progress_bar(
    label: str, total: int | None, unit: str
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A bar on stderr (none when it is not a terminal), redrawn by its updates only:
    ``update(n, None)`` advances by n; ``update(done, total)`` sets both."""
    if not _stderr_is_terminal():
        yield None
        return
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        "{task.description}",
        BarColumn(),
        amount,
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
        auto_refresh=False,
    ) as progress:
        task = progress.add_task(escape(printable(label)), total=total)

        def update(count: int, of: int | None) -> None:
            if of is None:
                progress.advance(task, count)
            else:
                progress.update(task, completed=count, total=max(of, count))
            progress.refresh()

        yield update


def _job_log() -> JobLog | None:
    """The run's ``--log-file``, when it has one: its result and messages go there."""
    from bnplctl.cli.context import job_log

    return job_log()


def message(text: str) -> None:
    """An informational line on stderr."""
    log = _job_log()
    if log is not None:
        log.messages.append(printable(text))
        return
    _console(stderr=True).print(printable(text), markup=False)


def warning(text: str) -> None:
    log = _job_log()
    if log is not None:
        log.messages.append(f"warning: {printable(text)}")
        return
    _console(stderr=True).print(f"warning: {printable(text)}", style="yellow", markup=False)


def error(text: str) -> None:
    """The one-line message of a refusal or an error, on stderr."""
    log = _job_log()
    if log is not None:
        log.error = printable(text)
        return
    _console(stderr=True).print(f"error: {printable(text)}", style="bold red", markup=False)
