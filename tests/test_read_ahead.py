"""The read-ahead thread that parses the next chunk while the database applies this one."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnplctl.errors import InputFileError
from bnplctl.importing.batch import read_ahead

pytestmark = pytest.mark.usefixtures("no_database")


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=4))
def test_items_arrive_in_order_and_complete(items: list[int], depth: int) -> None:
    assert list(read_ahead(iter(items), depth)) == items


def test_a_producer_error_arrives_after_the_items_before_it() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise InputFileError("line 3: broken")

    received: list[int] = []
    with pytest.raises(InputFileError, match="line 3: broken"):
        for item in read_ahead(produce()):
            received.append(item)
    assert received == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for n in range(1000):
            produced.append(n)
            yield n

    stream = read_ahead(produce(), depth=2)
    assert isinstance(stream, Generator)
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "bnplctl-read-ahead" for t in threading.enumerate())
    # It ran at most the queue's depth (plus the item in hand) ahead, never to the end.
    assert len(produced) <= 4
