"""The performance settings and shortcuts, in one place, each with the measurement that
earned it (docs/performance.md) and a test that it does what it says (tests/test_tuning.py).

- ``quick_thread_switches``: while a batch file's stager thread parses a chunk (pure
  Python, holding the interpreter lock), the applying thread needs the lock back after
  each of its round trips to the server; at Python's default switch interval (5 ms)
  every one of them could wait that long. Restored on the way out, also after an error.
- ``INDEX_LOOKUPS_ONLY``: a chunk joins a few thousand rows to tables that grow without
  bound (refunds, the event log, payments). Without statistics on the temporary tables,
  and with the logs growing during the run, the planner would hash whole tables for
  every chunk; index lookups keep a chunk's cost independent of the tables' sizes. And
  no JIT: with those joins turned off, a plan that still needs one is costed at 10^10,
  which always sets off JIT compilation with inlining and optimisation: 10-90 ms a
  statement, more than a chunk's lookups take. For the chunk's transaction only (``SET
  LOCAL``).
- ``end_process``: once a command has finished and its output is flushed, the process
  ends without tearing the interpreter down one object at a time: with SQLAlchemy and
  pydantic loaded that teardown takes 0.1-0.25 s on a two-core machine, longer than the
  work of most commands. The exit functions (coverage's save, the embedded server's
  client) still run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

QUICK_SWITCH_INTERVAL_S = 0.0002

INDEX_LOOKUPS_ONLY = (
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off;"
)


@contextmanager
def quick_thread_switches() -> Iterator[None]:
    """Thread switches every 0.2 ms (or sooner, if already so) inside the block."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, QUICK_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def end_process(code: int) -> NoReturn:
    """Run the exit functions, then end the process with ``code`` at once (the caller has
    flushed its output and knows no other thread must be waited for)."""
    import atexit
    import os

    atexit._run_exitfuncs()
    os._exit(code)
