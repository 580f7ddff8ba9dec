"""The benchmark's plain-SQL references run on exact copies of the product's tables."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.run import copy_tables, drop_tables, table_shape

# Every table a reference copies, and a table it does not copy (for the negative check).
COPIED = ("users", "installments", "refunds", "audit_events", "webhook_events")


def test_reference_copies_have_the_tables_shape(engine: Engine) -> None:
    copy_tables(engine, "ref_", COPIED[:3], COPIED[3:])
    try:
        with engine.connect() as connection:
            for table in COPIED:
                source, copy = (
                    table_shape(connection, table),
                    table_shape(connection, f"ref_{table}"),
                )
                assert source == copy, table
                assert source["indexes"] and source["constraints"], table
            # The storage parameters that make the product's updates heap-only are there.
            reloptions = table_shape(connection, "ref_refunds")["reloptions"]
            assert "fillfactor=50" in reloptions
            assert "fillfactor=85" in table_shape(connection, "ref_installments")["reloptions"]
    finally:
        drop_tables(engine, "ref_", COPIED)


def test_table_shape_sees_a_missing_storage_parameter(engine: Engine) -> None:
    """The comparison is not vacuous: a plain LIKE copy (the old references) differs."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE like_refunds (LIKE refunds INCLUDING ALL)"))
        try:
            assert table_shape(connection, "refunds") != table_shape(connection, "like_refunds")
        finally:
            connection.execute(text("DROP TABLE like_refunds"))
