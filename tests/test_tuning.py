"""The performance settings of ``bnplctl/tuning.py`` do what they say."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bnplctl import tuning


def test_quick_thread_switches_restores_the_interval_after_an_error() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), tuning.quick_thread_switches():
        assert sys.getswitchinterval() == pytest.approx(tuning.QUICK_SWITCH_INTERVAL_S)
        raise RuntimeError("a chunk failed")
    assert sys.getswitchinterval() == before


def test_quick_thread_switches_never_slows_an_interval_already_quicker() -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        with tuning.quick_thread_switches():
            assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    finally:
        sys.setswitchinterval(before)


def _plan(connection: object, settings: str = "") -> str:
    if settings:
        connection.execute(text(settings))  # type: ignore[attr-defined]
    rows = connection.execute(  # type: ignore[attr-defined]
        text("EXPLAIN SELECT * FROM tuning_rows r JOIN tuning_targets t ON t.id = r.target_id")
    )
    return "\n".join(row[0] for row in rows)


def test_index_lookups_only_turns_a_hash_join_into_index_lookups(engine: Engine) -> None:
    """A chunk's rows joined to a large table: hashed by default, looked up by index under
    the chunk's settings, for its transaction only."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TEMP TABLE tuning_targets (id integer PRIMARY KEY, note text);"
                " INSERT INTO tuning_targets SELECT g, 'x' FROM generate_series(1, 50000) g;"
                " CREATE TEMP TABLE tuning_rows (target_id integer);"
                " INSERT INTO tuning_rows SELECT g * 7 FROM generate_series(1, 5000) g;"
                " ANALYZE tuning_targets; ANALYZE tuning_rows;"
            )
        )
        default = _plan(connection)
        tuned = _plan(connection, tuning.INDEX_LOOKUPS_ONLY)
        assert "Hash Join" in default or "Merge Join" in default, default
        assert "Hash Join" not in tuned and "Merge Join" not in tuned, tuned
        assert "Index Scan using tuning_targets_pkey" in tuned, tuned
    with engine.begin() as connection:  # SET LOCAL: gone with the transaction
        value = connection.execute(text("SHOW enable_hashjoin")).scalar_one()
    assert value == "on"


def test_index_lookups_only_compiles_no_statement_for_its_transaction(engine: Engine) -> None:
    """No JIT in a chunk's transaction: a plan with a join the settings turn off costs
    10^10, which would set off JIT compilation (inlining, optimisation) on every chunk."""
    with engine.begin() as connection:
        before = connection.execute(text("SHOW jit")).scalar_one()
        connection.execute(text(tuning.INDEX_LOOKUPS_ONLY))
        inside = connection.execute(text("SHOW jit")).scalar_one()
    with engine.begin() as connection:
        after = connection.execute(text("SHOW jit")).scalar_one()
    assert (inside, after) == ("off", before)


def test_end_process_runs_the_exit_functions_and_ends_with_the_code() -> None:
    program = (
        "import atexit, sys\n"
        "from bnplctl import tuning\n"
        "atexit.register(lambda: print('exit functions ran', flush=True))\n"
        "tuning.end_process(3)\n"
        "print('never')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "exit functions ran\n")
