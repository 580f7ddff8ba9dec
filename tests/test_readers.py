"""The file readers: formats, line numbers, and only documented errors on any input."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnplctl.errors import InvalidInput
from bnplctl.importing.readers import RawRow, detect_format, read_rows

pytestmark = pytest.mark.usefixtures("no_database")


def _rows(content: bytes, fmt: str, required: tuple[str, ...] = ()) -> list[RawRow]:
    return list(read_rows(io.BytesIO(content), fmt, required))  # type: ignore[arg-type]


def test_csv_rows_keep_their_line_numbers() -> None:
    content = b'\xef\xbb\xbfA,B\n1,2\n\n"multi\nline",3\n4,5,6\n7\n'
    rows = _rows(content, "csv", ("a",))

    assert rows == [
        RawRow(2, {"a": "1", "b": "2"}),
        RawRow(4, {"a": "multi\nline", "b": "3"}),
        RawRow(6, {}, "3 fields, the header has 2"),
        RawRow(7, {"a": "7"}),
    ]


def test_csv_errors_name_the_line() -> None:
    with pytest.raises(InvalidInput, match="line 1: missing column"):
        _rows(b"x,y\n1,2\n", "csv", ("a",))
    with pytest.raises(InvalidInput, match="line 1: the file is empty"):
        _rows(b"\n\n", "csv")
    with pytest.raises(InvalidInput, match="line 3: not UTF-8"):
        _rows(b"a\n1\n\xff\xfe\n", "csv")


def test_json_array_rows_and_errors() -> None:
    rows = _rows(b'[\n {"A": 1},\n 5,\n {"b": "x"}\n]\n', "json")
    assert rows == [RawRow(2, {"a": 1}), RawRow(3, {}, "not a JSON object"), RawRow(4, {"b": "x"})]
    assert _rows(b" [ ] ", "json") == []
    for broken, line in [
        (b'{"a": 1}', "line 1: expected a JSON array"),
        (b'[{"a": 1} {"b": 2}]', "line 1: expected ','"),
        (b'[\n{"a": 1}\n] x', "line 3: unexpected data"),
        (b'[\n{"a": \n', "line 3: invalid JSON"),
    ]:
        with pytest.raises(InvalidInput, match=line):
            _rows(broken, "json")


def test_json_lines_bad_lines_are_row_errors() -> None:
    rows = _rows(b'{"a": 1}\n\nnot json\n[1]\n\xff\n{"b": 2}', "jsonl")
    assert [(row.line, row.error) for row in rows] == [
        (1, None),
        (3, "invalid JSON (Expecting value)"),
        (4, "not a JSON object"),
        (5, "not UTF-8 text"),
        (6, None),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("users.csv", b"[", "csv"),
        ("users.JSON", b"a,b", "json"),
        ("users.ndjson", b"", "jsonl"),
        ("-", b"  \n[{}]", "json"),
        ("-", b'{"a": 1}', "jsonl"),
        ("upload.txt", b"a,b\n", "csv"),
    ],
)
def test_format_detection(name: str, content: bytes, expected: str) -> None:
    assert detect_format(name, io.BufferedReader(io.BytesIO(content))) == expected


def test_explicit_format_wins_and_is_checked() -> None:
    stream = io.BufferedReader(io.BytesIO(b"[]"))
    assert detect_format("x.json", stream, "csv") == "csv"
    with pytest.raises(InvalidInput, match="format"):
        detect_format("x.json", stream, "xml")


@given(st.binary(max_size=300), st.sampled_from(["csv", "json", "jsonl"]))
def test_any_bytes_raise_nothing_but_invalid_input(content: bytes, fmt: str) -> None:
    try:
        for row in _rows(content, fmt, ("a",)):
            assert isinstance(row.fields, dict)
            assert row.line >= 1
    except InvalidInput as exc:
        assert exc.exit_code == 65


def test_csv_slices_split_on_record_boundaries_and_keep_line_numbers() -> None:
    from bnplctl.importing.readers import csv_slices

    content = b'\n\nA,B\n1,"two\nlines"\n3,4\n\n5,"x ""q"" y"\n6,"a\nb\nc"\n7,8\n'
    whole = _rows(content, "csv", ("a",))
    for size in (1, 2, 3, 100):
        slices = list(csv_slices(io.BytesIO(content), size))
        assert [row for piece in slices for row in piece.rows(("a",))] == whole, size
    assert [row.line for row in whole] == [4, 6, 8, 9, 12]
    assert whole[1].fields == {"a": "3", "b": "4"}
    assert whole[3].fields["b"] == "a\nb\nc"


def test_csv_slices_of_header_only_empty_and_broken_files() -> None:
    from bnplctl.importing.readers import csv_slices

    (only,) = list(csv_slices(io.BytesIO(b"a,b"), 10))
    assert list(only.rows(("a",))) == []
    with pytest.raises(InvalidInput, match="line 1: the file is empty"):
        list(csv_slices(io.BytesIO(b"\n \n"), 10))
    (missing,) = list(csv_slices(io.BytesIO(b"\nx,y\n1,2\n"), 10))
    with pytest.raises(InvalidInput, match="line 2: missing column"):
        list(missing.rows(("a",)))
    second = list(csv_slices(io.BytesIO(b"a\n1\n2\n\xff\n"), 2))[1]
    with pytest.raises(InvalidInput, match="line 4: not UTF-8"):
        list(second.rows(("a",)))


def test_json_nested_too_deeply_is_invalid_input_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidInput, match=r"line 2: invalid JSON \(nested too deeply\)"):
        _rows(b"[\n" + deep + b"\n]", "json")
    rows = _rows(b'{"a": 1}\n{"b": ' + deep + b"}\n", "jsonl")
    assert rows == [RawRow(1, {"a": 1}), RawRow(2, {}, "invalid JSON (nested too deeply)")]


def test_a_lone_surrogate_makes_its_row_invalid() -> None:
    rows = _rows(b'[{"name": "A\\ud800"}, {"name": "B"}, {"\\udfff": 1}]', "json")
    assert rows == [
        RawRow(1, {}, "name: not valid Unicode text (a lone surrogate)"),
        RawRow(1, {"name": "B"}),
        RawRow(1, {}, "a field name: not valid Unicode text (a lone surrogate)"),
    ]


def test_a_csv_field_over_the_csv_modules_default_limit_is_still_a_row() -> None:
    # 128 KiB is the csv module's default limit; a longer field must reach validation
    # (and fail its length check there) instead of failing the whole file.
    huge = b"x" * 200_000
    rows = _rows(b"a,b\n" + huge + b",1\n2,3\n", "csv", ("a",))
    assert [(row.line, len(row.fields["a"])) for row in rows] == [(2, 200_000), (3, 1)]


def _sliced(content: bytes, size: int) -> list[RawRow] | str:
    from bnplctl.importing.readers import csv_slices

    try:
        return [
            row for piece in csv_slices(io.BytesIO(content), size) for row in piece.rows(("a",))
        ]
    except InvalidInput as exc:
        return exc.message


def _whole(content: bytes) -> list[RawRow] | str:
    try:
        return _rows(content, "csv", ("a",))
    except InvalidInput as exc:
        return exc.message


def test_a_stray_quote_then_a_quoted_newline_reads_the_same_in_slices() -> None:
    """An unquoted ``O"Brien`` is a plain character to ``csv.reader``: the slicer must not
    take it for an opening quote (it once did, and a large file failed whole)."""
    content = b'a,b\n1,Conan O"Brien\n2,plain\n3,"two\nlines"\n4,x\n'
    whole = _whole(content)
    assert not isinstance(whole, str)
    assert [(row.line, row.fields["b"]) for row in whole] == [
        (2, 'Conan O"Brien'), (3, "plain"), (4, "two\nlines"), (6, "x")
    ]  # fmt: skip
    for size in (1, 2, 3):
        assert _sliced(content, size) == whole


_FIELD = st.text(alphabet=["a", "b", " ", '"', ",", "\n", "'", "é"], max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.lists(_FIELD, min_size=1, max_size=3), min_size=1, max_size=12),
    quoting=st.sampled_from(["writer", "raw"]),
    terminator=st.sampled_from(["\n", "\r\n"]),
    size=st.integers(min_value=1, max_value=4),
)
def test_slices_read_any_csv_as_one_pass_of_csv_reader_does(
    rows: list[list[str]], quoting: str, terminator: str, size: int
) -> None:
    """Whatever the quotes, commas, newlines and line ends: the same rows, fields and line
    numbers in slices as read whole, or the same error."""
    import csv

    if quoting == "writer":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=terminator).writerows([["a", "b", "c"], *rows])
        text = buffer.getvalue()
    else:  # stray quotes and unbalanced fields, as a careless export writes them
        text = terminator.join(",".join(row) for row in [["a", "b", "c"], *rows]) + terminator
    content = text.encode()
    assert _sliced(content, size) == _whole(content)


def test_a_header_naming_a_column_twice_makes_the_file_invalid() -> None:
    with pytest.raises(InvalidInput, match="line 1: column name appears twice in the header"):
        _rows(b"user_id,name,phone,name\nu,a,b,c\n", "csv")


# --- hostile input: repeated keys, numbers, huge values, lines without end (issue 28) ----


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_json_key_repeated_after_normalising_makes_its_row_invalid(fmt: str) -> None:
    """``Status`` after ``status`` must not win silently (it approved a rejected refund)."""
    objects = [
        b'{"refund_id": "DK-1", "status": "rejected", "Status": "approved"}',
        b'{"amount": "1.00", " AMOUNT ": "2.00"}',
        b'{"a": 1, "a": 1}',
        b'{"card 4111111111111111": 1, "CARD 4111111111111111": 2}',
        b'{"refund_id": "OK-1", "status": "approved"}',
    ]
    content = b"\n".join(objects) if fmt == "jsonl" else b"[" + b",\n".join(objects) + b"]"
    rows = _rows(content, fmt)
    assert [(row.line, row.error) for row in rows] == [
        (1, "status: the field appears twice (names are compared without case or spaces)"),
        (2, "amount: the field appears twice (names are compared without case or spaces)"),
        (3, "a: the field appears twice (names are compared without case or spaces)"),
        (4, "a field name appears twice (names are compared without case or spaces)"),
        (5, None),
    ]
    # The row keeps its other fields (its key, for the report), never the repeated one.
    assert rows[0].fields == {"refund_id": "DK-1"} and rows[1].fields == {}
    assert rows[4].fields == {"refund_id": "OK-1", "status": "approved"}
    assert b"4111" not in "".join(str(row.error) for row in rows).encode()


# JSON numbers as the JSON grammar writes them (RFC 8259, section 6).
_JSON_NUMBER = st.from_regex(
    r"-?(0|[1-9][0-9]{0,12})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)


def _payment_outcome(fields: dict[str, object]) -> str:
    from bnplctl.importing.payments import parse_payment

    try:
        return str(parse_payment(RawRow(1, fields)).amount)
    except InvalidInput as exc:
        return exc.message


@settings(max_examples=300, deadline=None)
@given(number=_JSON_NUMBER, fmt=st.sampled_from(["jsonl", "json"]))
def test_a_json_number_obeys_the_amount_rule_as_the_same_text_in_a_string(
    number: str, fmt: str
) -> None:
    """``{"amount": 1e1}`` is refused as ``"1e1"`` is (it was applied as 10.00), and
    ``0.10000000000000001`` as that text is (it was read as the float 0.1)."""
    row = '{"reference": "P-1", "user_id": "u", "amount": %s}'
    as_number, as_text = row % number, row % json.dumps(number)
    content = (as_number + "\n" + as_text).encode()
    if fmt == "json":
        content = b"[" + content.replace(b"\n", b",\n") + b"]"
    first, second = _rows(content, fmt)
    assert _payment_outcome(first.fields) == _payment_outcome(second.fields)


def test_json_numbers_with_an_exponent_or_a_third_decimal_are_refused_amounts() -> None:
    rows = _rows(b'{"amount": 1e1}\n{"amount": 0.10000000000000001}\n{"amount": 10.5}', "jsonl")
    outcomes = [_payment_outcome(row.fields | {"reference": "P", "user_id": "u"}) for row in rows]
    assert outcomes == [
        "amount: must be a number written with digits and an optional point, like 120.50",
        "amount: at most 2 decimal places",
        "10.50",
    ]


def test_a_json_integer_over_pythons_digit_limit_is_an_invalid_row_or_a_file_fault() -> None:
    """Python refuses to read an integer of more than 4,300 digits (``ValueError``): that
    was exit 1 in every importer."""
    huge = b"9" * 5000
    rows = _rows(b'{"a": 1}\n{"amount": ' + huge + b'}\n{"b": 2}\n', "jsonl")
    assert [(row.line, row.error) for row in rows] == [
        (1, None),
        (2, "invalid JSON (a number of more than 4300 digits)"),
        (3, None),
    ]
    assert _rows(b'{"amount": ' + b"9" * 4300 + b"}", "jsonl")[0].error is None
    with pytest.raises(InvalidInput, match=r"^line 3: a number of more than 4300 digits$"):
        _rows(b'[{"a": 1},\n{"b": 2,\n "amount": -' + huge + b"}]", "json")


def test_the_header_check_is_linear_and_a_header_over_its_limits_is_refused() -> None:
    from bnplctl.importing.readers import MAX_COLUMNS, MAX_HEADER_BYTES

    columns = ",".join(f"c{n}" for n in range(MAX_COLUMNS)).encode()
    assert _rows(columns + b"\n" + b"1\n", "csv")[0].fields == {"c0": "1"}
    wide = ",".join(f"c{n}" for n in range(MAX_COLUMNS + 1)).encode()
    with pytest.raises(InvalidInput, match=rf"^line 1: the header has {MAX_COLUMNS + 1} columns"):
        _rows(wide + b"\n1\n", "csv")
    long = b"a," + b"x" * MAX_HEADER_BYTES + b"\n1\n"
    with pytest.raises(InvalidInput, match=r"^line 3: the header is longer than 64 KiB"):
        _rows(b"\n\n" + long, "csv")


def test_a_header_of_100k_columns_is_refused_at_once(tmp_path: Path) -> None:
    """A 1.2 MB header (100k columns) cost ~100 s of CPU (a ``count`` per column): read
    in a process allowed 20 s of CPU, it is refused, naming line 1."""
    import subprocess
    import sys

    source = tmp_path / "wide.csv"
    source.write_bytes(",".join(f"col{n}" for n in range(100_000)).encode() + b"\n1\n")
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CPU, (20, 20))\n"
        "from bnplctl.errors import InvalidInput\n"
        "from bnplctl.importing.readers import read_rows\n"
        "try:\n"
        "    list(read_rows(open(sys.argv[1], 'rb'), 'csv'))\n"
        "except InvalidInput as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script, str(source)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("line 1: the header is longer than 64 KiB")


@contextmanager
def _limits(record: int, header: int = 1 << 20) -> Iterator[None]:
    from bnplctl.importing import readers

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readers, "MAX_RECORD_BYTES", record)
        patch.setattr(readers, "MAX_HEADER_BYTES", header)
        yield


def test_a_line_or_record_over_the_limit_is_a_file_fault_naming_its_line() -> None:
    with _limits(40):
        ok = b'{"a": "' + b"x" * 30 + b'"}\n'  # 39 bytes with its line end
        assert len(_rows(ok + ok, "jsonl")) == 2
        with pytest.raises(InvalidInput, match="^line 2: longer than the limit"):
            _rows(ok + b'{"a": "' + b"x" * 31 + b'"}\n', "jsonl")
        with pytest.raises(InvalidInput, match="^line 3: longer than the limit"):
            _rows(b"a,b\n1,2\n" + b"3," + b"y" * 40 + b"\n", "csv")
        multi = b'a,b\n1,2\n3,"' + b"z\n" * 25 + b'"\n4,5\n'  # a record of lines 3-28
        with pytest.raises(InvalidInput, match="^line 3: longer than the limit"):
            _rows(multi, "csv")
        with pytest.raises(InvalidInput, match="^line 3: longer than the limit"):
            _rows(b'[{"a": 1},\n\n{"b": "' + b"w" * 40 + b'"}]', "json")
        many = b"[" + b", ".join(b'{"a": "%d"}' % n for n in range(2000)) + b"]"
        assert len(_rows(many, "json")) == 2000  # one line: the limit is per element


def test_a_line_over_the_default_limit_is_refused() -> None:
    from bnplctl.importing.readers import MAX_RECORD_BYTES

    assert MAX_RECORD_BYTES == 1024 * 1024
    with pytest.raises(InvalidInput, match="^line 1: longer than the limit of 1 MiB"):
        _rows(b"\0" * (MAX_RECORD_BYTES * 3), "jsonl")


def _read(content: bytes, fmt: str) -> list[RawRow] | str:
    try:
        return _rows(content, fmt)
    except InvalidInput as exc:
        return exc.message


_JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
    | st.text(alphabet=["a", "\n", '"', "\\", "é", "\u2028", " "], max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "A", "b", " b"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    elements=st.lists(_JSON_VALUE, max_size=6),
    indent=st.sampled_from([None, 0, 2]),
    cut=st.integers(min_value=0, max_value=400),
    chunk=st.integers(min_value=1, max_value=9),
    record=st.sampled_from([12, 40, 1 << 20]),
)
def test_a_json_array_read_in_pieces_reads_as_read_whole(
    elements: list[object], indent: int | None, cut: int, chunk: int, record: int
) -> None:
    """Whatever the window the streaming reader holds (``chunk`` bytes at a time): the
    same rows, line numbers and errors as with the whole file in one window, complete
    or cut anywhere (a number cut at a window's end must not end there)."""
    from bnplctl.importing import readers

    whole = json.dumps(elements, indent=indent, ensure_ascii=False).encode()
    for content in (whole, whole[: cut % (len(whole) + 1)]):
        with _limits(record):
            expected = _read(content, "json")
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(readers, "_WINDOW_BYTES", chunk)
                assert _read(content, "json") == expected
        if record == 1 << 20 and content is whole:
            assert not isinstance(expected, str)
            assert len(expected) == len(elements)


_CSV_FIELD = st.text(alphabet=["a", "b", " ", '"', ",", "\n", "é"], max_size=8)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.lists(_CSV_FIELD, min_size=1, max_size=3), min_size=1, max_size=10),
    quoting=st.sampled_from(["writer", "raw"]),
    size=st.integers(min_value=1, max_value=4),
    record=st.integers(min_value=4, max_value=30),
    header=st.integers(min_value=4, max_value=12),
)
def test_slices_and_a_whole_read_stop_at_the_same_line_over_the_limit(
    rows: list[list[str]], quoting: str, size: int, record: int, header: int
) -> None:
    """The slicer (``users import``'s workers) and a whole read refuse the same record
    over the limits, naming the same line, after the same rows."""
    import csv

    if quoting == "writer":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([["a", "b", "c"], *rows])
        text = buffer.getvalue()
    else:
        text = "\n".join(",".join(row) for row in [["a", "b", "c"], *rows]) + "\n"
    content = text.encode()
    with _limits(record, header):
        assert _sliced(content, size) == _whole(content)


@pytest.mark.parametrize("lead", [b",,,,\n", b"\xc2\xa0\n", b"\xef\xbb\xbf\n", b" , \n\n"])
def test_csv_slices_skip_the_blank_looking_lines_the_reader_skips(lead: bytes) -> None:
    """A first line of empty cells, a no-break space or a byte-order mark alone: read whole
    or in slices, the header is the same line (users import splits files of 5,000+ rows)."""
    from bnplctl.importing.readers import csv_slices

    content = lead + b"a,b\n1,2\n3,4\n5,6\n"
    whole = _rows(content, "csv", ("a",))
    for size in (1, 2, 100):
        sliced = [
            row for piece in csv_slices(io.BytesIO(content), size) for row in piece.rows(("a",))
        ]
        assert sliced == whole, size
    assert [row.fields["a"] for row in whole] == ["1", "3", "5"]
