"""The file readers: formats, line numbers, and only documented errors on any input."""

from __future__ import annotations

import io

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
