"""File readers: CSV with a header, a JSON array, or JSON lines, into numbered rows.

Every format is streamed with bounded memory: a line, a CSV record or a JSON array's
element over ``MAX_RECORD_BYTES``, or a CSV header over its limits, stops the file at
that line. A row that cannot be understood on its own (a bad JSON line, a CSV row with
too many fields, a JSON object naming a key twice) becomes a row with an ``error``; a
file that cannot be read at all raises ``InvalidInput`` (exit 65) naming the line, and
a missing one ``InputFileError`` (exit 66).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from bnplctl.errors import InputFileError, InvalidInput

# A field longer than the csv module's default 128 KiB is an invalid row (every field
# has a length limit), not a file that cannot be parsed: let the parser take any field
# a record may hold (``MAX_RECORD_BYTES`` bounds the record first).
csv.field_size_limit(max(csv.field_size_limit(), 16 * 1024 * 1024))

Format = Literal["csv", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("auto", "csv", "json", "jsonl")
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_SNIFF_BYTES = 4096

# The limits of what one row may take while it is read (docs/commands.md, "Files and
# input"); read at each use, so that tests can lower them.
MAX_RECORD_BYTES = 1024 * 1024  # a line, a CSV record (its lines), a JSON array's element
MAX_HEADER_BYTES = 64 * 1024  # a CSV header
MAX_COLUMNS = 1000  # a CSV header's columns
MAX_INTEGER_DIGITS = 4300  # a JSON integer (Python's own limit for reading one)
_WINDOW_BYTES = 64 * 1024  # what a JSON array's reader reads at a time


@dataclass(slots=True)
class RawRow:
    """One input row: its line number, its fields, or why it could not be read."""

    line: int
    fields: dict[str, Any]
    error: str | None = None


class HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them (the file's checksum) and counting them."""

    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._source = source
        self._on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def buffered(self) -> io.BufferedReader:
        """A buffered view (peek, lines) over this reader, as the file readers expect."""
        return io.BufferedReader(self, buffer_size=1024 * 1024)

    def readinto(self, buffer: Any) -> int:
        chunk = self._source.read(len(buffer))
        count = len(chunk)
        buffer[:count] = chunk
        self.sha256.update(chunk)
        self.size += count
        if self._on_bytes is not None and count:
            self._on_bytes(count)
        return count


@contextmanager
def open_input(name: str) -> Iterator[IO[bytes]]:
    """A binary stream for a path, or standard input for ``-``."""
    if name == "-":
        if sys.stdin is None:  # started with standard input closed (``<&-``)
            raise InputFileError("-: standard input is closed")
        stdin = sys.stdin.buffer
        # Format detection peeks at the first bytes; give a plain stream a buffer that can.
        yield stdin if hasattr(stdin, "peek") else io.BufferedReader(stdin)  # type: ignore[type-var]
        return
    try:
        handle = io.BufferedReader(_InputFile(name))
    except FileNotFoundError:
        raise InputFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{name}: is a directory") from None
    except OSError as exc:
        raise InputFileError(f"{name}: cannot be read ({exc.strerror or 'error'})") from None
    with handle:
        yield handle


class _InputFile(io.FileIO):
    """An input file whose reads that fail (EIO from a failing disk, ``/proc/self/mem``)
    are exit 66 naming it, wherever the readers meet them, not an internal error."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "rb")
        self.label = name

    def readinto(self, buffer: Any) -> int | None:
        with self._failures_named():
            return super().readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        with self._failures_named():
            return super().read(size)

    def readall(self) -> bytes:
        with self._failures_named():
            return super().readall()

    @contextmanager
    def _failures_named(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise InputFileError(
                f"{self.label}: cannot be read ({exc.strerror or 'error'})"
            ) from None


def detect_format(name: str, stream: IO[bytes], requested: str = "auto") -> Format:
    """The explicit format, else the extension, else the first non-blank byte."""
    if requested != "auto":
        if requested not in FORMATS:
            raise InvalidInput(f"format: must be one of {', '.join(FORMATS)}")
        return requested  # type: ignore[return-value]
    by_extension = _EXTENSIONS.get(Path(name).suffix.lower()) if name != "-" else None
    if by_extension is not None:
        return by_extension
    head = _peek(stream).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    return "csv"


def _peek(stream: IO[bytes]) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(_SNIFF_BYTES))[:_SNIFF_BYTES]
    return b""


def input_label(name: str) -> str:
    """An input as a message names it: its path, or "standard input" for ``-``."""
    return "standard input" if name == "-" else name


@contextmanager
def faults_named(name: str) -> Iterator[None]:
    """A fault of the file (``InvalidInput``: a line it cannot read, a missing column)
    names the file: with several files, "line 5" alone does not say which."""
    try:
        yield
    except InvalidInput as exc:
        raise InvalidInput(f"{input_label(name)}: {exc.message}") from None


@contextmanager
def no_progress(size: int | None, name: str) -> Iterator[None]:
    """No progress shown (``progress`` of the batch functions, called without a CLI)."""
    yield


# Called with a CSV header's column names (stripped, lower case) and its line, before any
# row is read: a caller that finds columns by name checks them there (``presets.py``).
HeaderCheck = Callable[[list[str], int], None]

_ABSENT = object()


class ColumnMap:
    """``--map FIELD=COLUMN``: fields a file holds under columns of its own names, read
    as if the file used ours. A mapped field never reads the column of its own name (the
    map wins; that column is left unread). A CSV file is renamed once, in its header
    (``header``): its rows are then read as any file's. JSON has no header: each object's
    mapped keys are moved (``row``), a few dictionary operations per row."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = dict(columns)  # field -> column, as the option gave it (messages)
        # Column names as the readers give them: stripped, lower case.
        self._field_of = {column.strip().lower(): name for name, column in columns.items()}
        self._moves = tuple(self._field_of.items())

    def header(self, names: list[str], line: int, required: tuple[str, ...]) -> list[str]:
        """A CSV header's names with each mapped column named as its field, and a column
        named like a mapped field blank (unread). Every mapped column, and every
        ``required`` field that is not mapped, must be there (exit 65)."""
        present = set(names)
        missing = [name for name in required if name not in self.columns and name not in present]
        absent = [name for column, name in self._moves if column not in present]
        if absent:
            from bnplctl.validators import printable

            shown = {name: printable(self.columns[name]) for name in absent}
            missing += [f"{shown[name]} (--map {name}={shown[name]})" for name in absent]
        if missing:
            raise InvalidInput(
                f"line {line}: missing column(s): {', '.join(missing)}" + _separator_hint(names)
            )
        return [
            self._field_of[name] if name in self._field_of
            else "" if name in self.columns
            else name
            for name in names
        ]  # fmt: skip

    def row(self, row: RawRow) -> RawRow:
        """A JSON object's row with its mapped keys renamed as their fields (in place); a
        key named like a mapped field is dropped."""
        fields = row.fields
        moved = [(name, fields.pop(column, _ABSENT)) for column, name in self._moves]
        for name, _ in moved:
            fields.pop(name, None)
        for name, value in moved:
            if value is not _ABSENT:
                fields[name] = value
        return row

    def labelled(self, message: str) -> str:
        """A field's message (``status: ...``) naming the column it was read from
        (``status (column State): ...``), as a custom payments layout's are."""
        from bnplctl.validators import printable

        name, separator, reason = message.partition(": ")
        column = self.columns.get(name)
        if not separator or column is None:
            return message
        return f"{name} (column {printable(column)}): {reason}"


def read_rows(
    stream: IO[bytes],
    fmt: Format,
    required: Iterable[str] = (),
    on_header: HeaderCheck | None = None,
    columns: ColumnMap | None = None,
) -> Iterator[RawRow]:
    """Rows of ``stream`` in ``fmt``; CSV headers must name every ``required`` column
    (and pass ``on_header``, when given). ``columns``: fields read from other columns
    (``--map``), a required one from its mapped column."""
    if fmt == "csv":
        return _read_csv(stream, tuple(required), on_header=on_header, columns=columns)
    rows = _read_json_array(stream) if fmt == "json" else _read_json_lines(stream)
    return rows if columns is None else map(columns.row, rows)


def _same_line(number: int) -> int:
    return number


@dataclass
class _Budget:
    """What the CSV record being read may take: its limit (the header's until the header
    is read), the bytes its lines took so far, and the line it starts on."""

    limit: int
    header: bool = True
    used: int = 0
    start: int = 1

    def next_record(self, start: int) -> None:
        self.used, self.start = 0, start

    def header_read(self) -> None:
        self.limit, self.header = MAX_RECORD_BYTES, False


def _over_the_limit(header: bool) -> str:
    """Why a record over its limit stops the file (after ``line N: ``)."""
    if header:
        return f"the header is longer than {_size(MAX_HEADER_BYTES)} (the limit)"
    return f"longer than the limit of {_size(MAX_RECORD_BYTES)} for one line or record"


def _size(count: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def _decoded_lines(
    stream: IO[bytes],
    line_of: Callable[[int], int],
    budget: _Budget,
    end_fault: str | None = None,
) -> Iterator[str]:
    """Text lines decoded one at a time, so a bad byte is reported on its own line; a
    record over ``budget`` stops at the line that takes it over (never read whole).
    ``end_fault``: what to raise at the end of ``stream`` (a slice cut at such a line)."""
    number = 0
    while raw := stream.readline(budget.limit - budget.used + 1):
        number += 1
        budget.used += len(raw)
        if budget.used > budget.limit:
            raise InvalidInput(f"line {line_of(budget.start)}: {_over_the_limit(budget.header)}")
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"line {line_of(number)}: not UTF-8 text") from None
    if end_fault is not None:
        raise InvalidInput(end_fault)


def _read_csv(
    stream: IO[bytes],
    required: tuple[str, ...],
    line_of: Callable[[int], int] = _same_line,
    end_fault: str | None = None,
    on_header: HeaderCheck | None = None,
    columns: ColumnMap | None = None,
) -> Iterator[RawRow]:
    """CSV rows; ``line_of`` maps the stream's line numbers to the file's (for slices);
    ``columns``: the header renamed once (``ColumnMap.header``)."""
    budget = _Budget(MAX_HEADER_BYTES)
    reader = csv.reader(_decoded_lines(stream, line_of, budget, end_fault), strict=True)
    line = 0
    header: list[str] | None = None
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            budget.next_record(line + 1)
            if not record or not any(map(str.strip, record)):
                continue
            if header is None:
                if columns is None:
                    header = _header(record, line_of(start), required)
                else:
                    names = _header(record, line_of(start), ())
                    header = columns.header(names, line_of(start), required)
                if on_header is not None:
                    on_header(header, line_of(start))
                budget.header_read()
                continue
            if len(record) > len(header):
                yield RawRow(
                    line_of(start), {}, f"{len(record)} fields, the header has {len(header)}"
                )
                continue
            yield RawRow(line_of(start), dict(zip(header, record, strict=False)))
    except csv.Error as exc:
        raise InvalidInput(f"line {line_of(reader.line_num)}: malformed CSV ({exc})") from None
    if header is None:
        raise InvalidInput("line 1: the file is empty (a header row is required)")


def csv_records(stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """The CSV records of a file without a header row of its own (a PayPal settlement
    report names its columns in a record of its own), each with the line it starts on;
    blank records are skipped. Bounded as every record is: one over ``MAX_RECORD_BYTES``
    stops the file naming its line."""
    budget = _Budget(MAX_RECORD_BYTES, header=False)
    reader = csv.reader(_decoded_lines(stream, _same_line, budget), strict=True)
    line = 0
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            budget.next_record(line + 1)
            if record and any(map(str.strip, record)):
                yield start, record
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: malformed CSV ({exc})") from None


def header_names(record: list[str], line: int) -> list[str]:
    """A header record's column names, checked as a CSV file's header is (``_header``)."""
    return _header(record, line, ())


def _header(record: list[str], line: int, required: tuple[str, ...]) -> list[str]:
    """The header's column names (stripped, lower case): at most ``MAX_COLUMNS``, none
    twice, every ``required`` one there."""
    if len(record) > MAX_COLUMNS:
        raise InvalidInput(
            f"line {line}: the header has {len(record)} columns, more than the limit of"
            f" {MAX_COLUMNS}"
        )
    header = [cell.strip().lower() for cell in record]
    counts = Counter(name for name in header if name)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise InvalidInput(f"line {line}: column {repeated[0]} appears twice in the header")
    missing = [column for column in required if column not in counts]
    if missing:
        raise InvalidInput(
            f"line {line}: missing column(s): {', '.join(missing)}" + _separator_hint(header)
        )
    return header


def _separator_hint(header: list[str]) -> str:
    """A header that holds ``;`` or a tab was written with another separator (a
    spreadsheet's export in many locales): say so, since the columns look missing."""
    for separator, name in ((";", "';'"), ("\t", "tabs")):
        if any(separator in cell for cell in header):
            return (
                f"; the header is separated by {name}: bnplctl reads comma-separated CSV"
                " (export the file with ',' as the separator)"
            )
    return ""


@dataclass(frozen=True)
class CsvSlice:
    """A run of whole CSV records as raw bytes, with the header, for a worker to parse;
    ``fault``: why the file stops after them (a record over its limit), raised where a
    whole read raises it."""

    header: bytes
    header_line: int
    first_line: int
    payload: bytes
    fault: str | None = None

    def rows(self, required: Iterable[str]) -> Iterator[RawRow]:
        header_lines = self.header.count(b"\n") + (not self.header.endswith(b"\n"))

        def line_of(number: int) -> int:
            if number <= header_lines:
                return self.header_line + number - 1
            return self.first_line + number - header_lines - 1

        content = io.BytesIO(self.header + self.payload)
        return _read_csv(content, tuple(required), line_of, self.fault)


class _SliceBudget:
    """The slicer's view of the limits a whole read applies (``_Budget``): a record
    starts on a line that does not continue a quoted field."""

    def __init__(self) -> None:
        self.used = 0
        self.start = 1
        self.header = True
        self.over = False

    def read(self, stream: IO[bytes], number: int, continued: bool) -> bytes:
        if not continued:
            self.used, self.start = 0, number
        limit = MAX_HEADER_BYTES if self.header else MAX_RECORD_BYTES
        raw = stream.readline(limit - self.used + 1)
        self.used += len(raw)
        self.over = self.used > limit
        return raw

    def fault(self) -> str:
        return f"line {self.start}: {_over_the_limit(self.header)}"


def csv_slices(stream: IO[bytes], records: int) -> Iterator[CsvSlice]:
    """Split a CSV stream into slices of about ``records`` records, never inside one.

    A record goes on to the next line while a quoted field is open; whether it is, is
    decided as ``csv.reader`` decides it (``_quoted_after``), so that a file gives the
    same rows, outcomes and line numbers whether it is read whole or in slices. A record
    over its limit ends the last slice, which then raises that fault in its place.
    """
    header = b""
    header_line = 0
    pending: list[bytes] = []
    first_line = 0
    counted = 0
    quoted = False
    sent = False
    budget = _SliceBudget()
    for number in itertools.count(1):
        raw = budget.read(stream, number, quoted)
        if budget.over:
            payload = b"".join(pending)
            yield CsvSlice(header, header_line, first_line, payload, budget.fault())
            return
        if not raw:
            break
        if header_line == 0 or quoted and not pending:
            if header_line == 0 and _blank_record(raw, number):
                continue
            header_line = header_line or number
            header += raw
            quoted = _quoted_after(raw, quoted)
            budget.header = quoted
            continue
        if not pending:
            first_line = number
        pending.append(raw)
        quoted = _quoted_after(raw, quoted)
        if not quoted:
            counted += 1
            if counted >= records:
                yield CsvSlice(header, header_line, first_line, b"".join(pending))
                sent, pending, counted = True, [], 0
    if header_line == 0:
        raise InvalidInput("line 1: the file is empty (a header row is required)")
    if pending or not sent:
        yield CsvSlice(header, header_line, first_line or header_line + 1, b"".join(pending))


def _blank_record(raw: bytes, number: int) -> bool:
    """Whether a line before the header is one ``_read_csv`` skips: every cell blank once
    stripped (``,,,``, a no-break space, a byte-order mark alone). A line with a quote is
    left to the reader (it may open a field that goes on)."""
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        return False
    return '"' not in text and not any(cell.strip() for cell in text.split(","))


def _quoted_after(line: bytes, quoted: bool) -> bool:
    """Whether a quoted field is still open at the end of ``line``, given whether one was
    open at its start. As ``csv.reader`` reads it: a quote opens a field only where the
    field starts (the line's start outside a field, or right after a comma); elsewhere
    outside a quoted field it is a plain character; inside one, a doubled quote is a
    quote and a single one closes the field."""
    if b'"' not in line:
        return quoted
    position = 0
    field_start = not quoted
    while True:
        found = line.find(b'"', position)
        if found < 0:
            return quoted
        if quoted:
            if line[found + 1 : found + 2] == b'"':
                position = found + 2
                continue
            quoted, field_start, position = False, False, found + 1
            continue
        if (found == 0 and field_start) or (found > 0 and line[found - 1] == 0x2C):
            quoted = True
        position, field_start = found + 1, False


# --- JSON ------------------------------------------------------------------------------


class JsonFloat(float):
    """A JSON number written with a fraction or an exponent: its value, and its source
    text, which is what the text rules read (``str``): ``1e1`` is refused as an amount
    as the string ``"1e1"`` is, and ``0.10000000000000001`` is not taken for 0.1."""

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[JsonFloat], tuple[str]]:  # to a worker process
        return (JsonFloat, (self.text,))


class _TooManyDigits(Exception):
    """A JSON integer Python will not read (``MAX_INTEGER_DIGITS``)."""


class _NotJsonConstant(Exception):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's decoder takes them, JSON has none."""


def _no_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


def _json_integer(text: str) -> int | float:
    if len(text) - text.startswith("-") > MAX_INTEGER_DIGITS:
        raise _TooManyDigits
    if text == "-0":  # the one integer whose text ``str`` would not give back
        return JsonFloat(text)
    return int(text)


class _RepeatedKey(dict[str, Any]):
    """A JSON object that names a key twice (after case and surrounding spaces are
    normalised): which one, for the row's error."""

    repeated: str


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's fields by normalised name (stripped, lower case); one that names
    a field twice so is marked (``_RepeatedKey``): neither value may win silently."""
    fields = {key.strip().lower(): value for key, value in pairs}
    if len(fields) == len(pairs):
        return fields
    seen: set[str] = set()
    marked = _RepeatedKey(fields)
    for key, _ in pairs:
        name = key.strip().lower()
        if name in seen:
            marked.repeated = name
            break
        seen.add(name)
    return marked


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(
        object_pairs_hook=_json_object,
        parse_float=JsonFloat,
        parse_int=_json_integer,
        parse_constant=_no_constant,
    )


_TOO_MANY_DIGITS = f"a number of more than {MAX_INTEGER_DIGITS} digits"
# A field named in a row's error: only names made of letters (a key may be anything,
# a card number too).
_FIELD_NAME = re.compile(r"[a-z_]{1,64}")


def _read_json_lines(stream: IO[bytes]) -> Iterator[RawRow]:
    decoder = _decoder()
    number = 0
    while raw := stream.readline(MAX_RECORD_BYTES + 1):
        number += 1
        if len(raw) > MAX_RECORD_BYTES:
            raise InvalidInput(f"line {number}: {_over_the_limit(header=False)}")
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            yield RawRow(number, {}, "not UTF-8 text")
            continue
        if not text:
            continue
        try:
            element = decoder.decode(text)
        except json.JSONDecodeError as exc:
            yield RawRow(number, {}, f"invalid JSON ({exc.msg})")
            continue
        except RecursionError:
            yield RawRow(number, {}, "invalid JSON (nested too deeply)")
            continue
        except _TooManyDigits:
            yield RawRow(number, {}, f"invalid JSON ({_TOO_MANY_DIGITS})")
            continue
        except _NotJsonConstant as exc:
            yield RawRow(number, {}, f"invalid JSON ({exc} is not a JSON value)")
            continue
        yield _row_from_json(number, element)


class _Window:
    """The part of a JSON array's text being read: decoded as it is read, ``_WINDOW_BYTES``
    or more at a time; what was read before it is dropped (memory stays flat)."""

    _BLANK = re.compile(r"[ \t\r\n]*")

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text = ""
        self.ended = False
        self._first_line = 1  # the line text[0] is on
        self._counted = (0, 1)  # a position in text, and its line (counted incrementally)

    def line_at(self, position: int) -> int:
        counted, line = self._counted if position >= self._counted[0] else (0, self._first_line)
        line += self.text.count("\n", counted, position)
        self._counted = (position, line)
        return line

    def more(self, position: int, size: int) -> int:
        """Drops the text before ``position``, reads ``size`` bytes more (or the end);
        returns ``position``'s place in the new text."""
        if self.ended:
            return position
        first_line = self.line_at(position)
        data = self._stream.read(size)
        try:
            added = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.line_at(len(self.text)) + data.count(b"\n", 0, max(exc.start, 0))
            raise InvalidInput(f"line {line}: not UTF-8 text") from None
        self.text = self.text[position:] + added
        self.ended = not data
        self._first_line, self._counted = first_line, (0, first_line)
        return 0

    def skip_blank(self, position: int) -> int:
        """The next position that is not blank (``len(text)`` at the end of the file)."""
        while True:
            found = self._BLANK.match(self.text, position)
            position = found.end() if found else position
            if position < len(self.text) or self.ended:
                return position
            position = self.more(position, _WINDOW_BYTES)

    def at(self, position: int, text: str) -> bool:
        return self.text.startswith(text, position)


def _read_json_array(stream: IO[bytes]) -> Iterator[RawRow]:
    """The elements of a JSON array, one at a time (``_Window``), each no larger than
    ``MAX_RECORD_BYTES`` (characters), with the line it starts on."""
    window = _Window(stream)
    decoder = _decoder()
    position = window.skip_blank(0)
    if not window.at(position, "["):
        raise InvalidInput(f"line {window.line_at(position)}: expected a JSON array")
    position = window.skip_blank(position + 1)
    if window.at(position, "]"):
        return _trailing(window, position)
    while True:
        position, element, end = _element(window, decoder, position)
        yield _row_from_json(window.line_at(position), element)
        position = window.skip_blank(end)
        if window.at(position, ","):
            position = window.skip_blank(position + 1)
            continue
        if window.at(position, "]"):
            return _trailing(window, position)
        raise InvalidInput(f"line {window.line_at(position)}: expected ',' or ']'")


def _trailing(window: _Window, position: int) -> None:
    trailing = window.skip_blank(position + 1)
    if trailing != len(window.text):
        raise InvalidInput(f"line {window.line_at(trailing)}: unexpected data after the array")


# A verdict this close to the window's end may change once more is read: a number cut
# there (``1.`` reads as 1), a literal (``tru``: no value), an escape (``\\u00``).
_UNSURE_MARGIN = 10


def _element(window: _Window, decoder: json.JSONDecoder, position: int) -> tuple[int, Any, int]:
    """The element at ``position`` (which moves as the window is refilled), decoded once
    the window holds all of it. Its verdict (where the decoder ended, or failed) only
    moves on as more is read, so an element whose verdict lies past ``MAX_RECORD_BYTES``
    is refused at once, whatever the window: the same outcome as a whole read."""
    size = _WINDOW_BYTES
    while True:
        element, fault, verdict = _decode(window, decoder, position)
        if verdict - position > MAX_RECORD_BYTES:
            line = window.line_at(position)
            raise InvalidInput(f"line {line}: {_over_the_limit(header=False)}")
        if window.ended or verdict < len(window.text) - _UNSURE_MARGIN:
            if fault is not None:
                raise InvalidInput(fault)
            return position, element, verdict
        position = window.more(position, size)
        size = min(size * 2, MAX_RECORD_BYTES + 1)


def _decode(
    window: _Window, decoder: json.JSONDecoder, position: int
) -> tuple[Any, str | None, int]:
    """The element at ``position`` and where it ends, or why it cannot be read and where
    (an unterminated string: at the end of the window)."""
    try:
        element, end = decoder.raw_decode(window.text, position)
        return element, None, end
    except json.JSONDecodeError as exc:
        unterminated = exc.msg.startswith("Unterminated string")
        verdict = len(window.text) if unterminated else exc.pos
        return None, f"line {window.line_at(exc.pos)}: invalid JSON ({exc.msg})", verdict
    except RecursionError:
        line = window.line_at(position)
        raise InvalidInput(f"line {line}: invalid JSON (nested too deeply)") from None
    except _TooManyDigits:
        found = _LONG_NUMBER.search(window.text, position)
        line = window.line_at(found.start() if found else position)
        raise InvalidInput(f"line {line}: {_TOO_MANY_DIGITS}") from None
    except _NotJsonConstant as exc:
        line = window.line_at(window.text.find(str(exc), position))
        raise InvalidInput(f"line {line}: invalid JSON ({exc} is not a JSON value)") from None


_LONG_NUMBER = re.compile("[0-9]{%d}" % (MAX_INTEGER_DIGITS + 1))  # noqa: UP031 - braces


# JSON may spell a lone UTF-16 surrogate (``"\\ud800"``): a Python string that no UTF-8
# text, no database column and no terminal can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _row_from_json(line: int, element: Any) -> RawRow:
    if not isinstance(element, dict):
        return RawRow(line, {}, "not a JSON object")
    if isinstance(element, _RepeatedKey):
        name = element.repeated
        field = f"{name}: the field" if _FIELD_NAME.fullmatch(name) else "a field name"
        # The other fields stay, so that the report can name the row by its key (shown
        # as any key is: printable, personal values withheld); the repeated one does not.
        kept = {
            key: value
            for key, value in element.items()
            if key != name and not _SURROGATE.search(key)
            and not (isinstance(value, str) and _SURROGATE.search(value))
        }  # fmt: skip
        return RawRow(
            line, kept, f"{field} appears twice (names are compared without case or spaces)"
        )
    for name, value in element.items():
        if _SURROGATE.search(name) or isinstance(value, str) and _SURROGATE.search(value):
            field = "a field name" if _SURROGATE.search(name) else name
            return RawRow(line, {}, f"{field}: not valid Unicode text (a lone surrogate)")
    return RawRow(line, element)
