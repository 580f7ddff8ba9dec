"""File readers: CSV with a header, a JSON array, or JSON lines, into numbered rows.

Readers stream where the format allows (CSV, JSON lines). A row that cannot be
understood on its own (a bad JSON line, a CSV row with too many fields) becomes a
row with an ``error``; a file that cannot be read at all raises ``InvalidInput``
(exit 65) naming the line, and a missing one ``InputFileError`` (exit 66).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from bnplctl.errors import InputFileError, InvalidInput

# A field longer than the csv module's default 128 KiB is an invalid row (every field
# has a length limit), not a file that cannot be parsed: let the parser take up to
# 16 MiB per field.
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


@dataclass(frozen=True)
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


@contextmanager
def faults_named(name: str) -> Iterator[None]:
    """A fault of the file (``InvalidInput``: a line it cannot read, a missing column)
    names the file: with several files, "line 5" alone does not say which."""
    try:
        yield
    except InvalidInput as exc:
        label = "standard input" if name == "-" else name
        raise InvalidInput(f"{label}: {exc.message}") from None


def read_rows(stream: IO[bytes], fmt: Format, required: Iterable[str] = ()) -> Iterator[RawRow]:
    """Rows of ``stream`` in ``fmt``; CSV headers must name every ``required`` column."""
    if fmt == "csv":
        return _read_csv(stream, tuple(required))
    if fmt == "json":
        return _read_json_array(stream)
    return _read_json_lines(stream)


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def _same_line(number: int) -> int:
    return number


def _decoded_lines(stream: IO[bytes], line_of: Callable[[int], int]) -> Iterator[str]:
    """Text lines decoded one at a time, so a bad byte is reported on its own line."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"line {line_of(number)}: not UTF-8 text") from None


def _read_csv(
    stream: IO[bytes], required: tuple[str, ...], line_of: Callable[[int], int] = _same_line
) -> Iterator[RawRow]:
    """CSV rows; ``line_of`` maps the stream's line numbers to the file's (for slices)."""
    reader = csv.reader(_decoded_lines(stream, line_of), strict=True)
    line = 0
    header: list[str] | None = None
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            if not record or not any(map(str.strip, record)):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                repeated = sorted({name for name in header if name and header.count(name) > 1})
                if repeated:
                    raise InvalidInput(
                        f"line {line_of(start)}: column {repeated[0]} appears twice in the header"
                    )
                missing = [column for column in required if column not in header]
                if missing:
                    raise InvalidInput(
                        f"line {line_of(start)}: missing column(s): {', '.join(missing)}"
                        + _separator_hint(header)
                    )
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
    """A run of whole CSV records as raw bytes, with the header, for a worker to parse."""

    header: bytes
    header_line: int
    first_line: int
    payload: bytes

    def rows(self, required: Iterable[str]) -> Iterator[RawRow]:
        header_lines = self.header.count(b"\n")

        def line_of(number: int) -> int:
            if number <= header_lines:
                return self.header_line + number - 1
            return self.first_line + number - header_lines - 1

        return _read_csv(io.BytesIO(self.header + self.payload), tuple(required), line_of)


def csv_slices(stream: IO[bytes], records: int) -> Iterator[CsvSlice]:
    """Split a CSV stream into slices of about ``records`` records, never inside one.

    A record goes on to the next line while a quoted field is open; whether it is, is
    decided as ``csv.reader`` decides it (``_quoted_after``), so that a file gives the
    same rows, outcomes and line numbers whether it is read whole or in slices.
    """
    header = b""
    header_line = 0
    pending: list[bytes] = []
    first_line = 0
    counted = 0
    quoted = False
    sent = False
    for number, raw in enumerate(stream, start=1):
        if header_line == 0 or quoted and not pending:
            if header_line == 0 and not raw.strip():
                continue
            header_line = header_line or number
            header += raw
            quoted = _quoted_after(raw, quoted)
            continue
        if not pending:
            first_line = number
        pending.append(raw)
        quoted = _quoted_after(raw, quoted)
        if not quoted:
            counted += 1
            if counted >= records:
                yield CsvSlice(_line(header), header_line, first_line, b"".join(pending))
                sent, pending, counted = True, [], 0
    if header_line == 0:
        raise InvalidInput("line 1: the file is empty (a header row is required)")
    if pending or not sent:
        yield CsvSlice(_line(header), header_line, first_line or header_line + 1, b"".join(pending))


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


def _line(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _read_json_array(stream: IO[bytes]) -> Iterator[RawRow]:
    text = _text(stream)
    try:
        document = text.read()
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text") from None
    finally:
        text.detach()
    decoder = json.JSONDecoder()
    lines = _LineCounter(document)
    position = _skip_blank(document, 0)
    if not document.startswith("[", position):
        raise InvalidInput(f"line {lines.at(position)}: expected a JSON array")
    position = _skip_blank(document, position + 1)
    if document.startswith("]", position):
        return
    while True:
        line = lines.at(position)
        try:
            element, position = decoder.raw_decode(document, position)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {exc.lineno}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise InvalidInput(f"line {line}: invalid JSON (nested too deeply)") from None
        yield _row_from_json(line, element)
        position = _skip_blank(document, position)
        if document.startswith(",", position):
            position = _skip_blank(document, position + 1)
            continue
        if document.startswith("]", position):
            trailing = _skip_blank(document, position + 1)
            if trailing != len(document):
                raise InvalidInput(f"line {lines.at(trailing)}: unexpected data after the array")
            return
        raise InvalidInput(f"line {lines.at(position)}: expected ',' or ']'")


class _LineCounter:
    """Line numbers of increasing positions in a document, counted incrementally."""

    def __init__(self, document: str) -> None:
        self._document = document
        self._position = 0
        self._line = 1

    def at(self, position: int) -> int:
        self._line += self._document.count("\n", self._position, position)
        self._position = position
        return self._line


def _read_json_lines(stream: IO[bytes]) -> Iterator[RawRow]:
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            yield RawRow(number, {}, "not UTF-8 text")
            continue
        if not text:
            continue
        try:
            element = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(number, {}, f"invalid JSON ({exc.msg})")
            continue
        except RecursionError:
            yield RawRow(number, {}, "invalid JSON (nested too deeply)")
            continue
        yield _row_from_json(number, element)


# JSON may spell a lone UTF-16 surrogate (``"\\ud800"``): a Python string that no UTF-8
# text, no database column and no terminal can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _row_from_json(line: int, element: Any) -> RawRow:
    if not isinstance(element, dict):
        return RawRow(line, {}, "not a JSON object")
    fields = {str(key).strip().lower(): value for key, value in element.items()}
    for name, value in fields.items():
        if _SURROGATE.search(name) or isinstance(value, str) and _SURROGATE.search(value):
            field = "a field name" if _SURROGATE.search(name) else name
            return RawRow(line, {}, f"{field}: not valid Unicode text (a lone surrogate)")
    return RawRow(line, fields)


def _skip_blank(document: str, position: int) -> int:
    while position < len(document) and document[position] in " \t\r\n":
        position += 1
    return position
