"""docs/scaling.md held to the live schema (CONVENTIONS.md, rule 19): every primary key,
unique constraint, unique index, check, exclusion constraint and foreign key of the public
tables, read from ``pg_constraint`` and ``pg_index`` after the migrations, has its row in
the page's constraints table and no row names one the schema lacks; every table has its
placement; each row's verdict (``accepted`` / ``refused``) is the one Citus's rules give
under that placement; the DDL block is the placement table, call for call; and every
distribution column Citus would refuse as it is (nullable, or of another type or collation
than its colocation group's) is named in the page.

A failure says what to add or remove, as the markdown row to write."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

SCALING_MD = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
PLACEMENT_HEADER = ("table", "placement", "distribution column", "colocate with")
CONSTRAINTS_HEADER = ("table", "constraint", "kind", "columns", "Citus", "change")
KINDS = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}
PLACEMENTS = ("distributed", "reference", "local")
VERDICTS = ("accepted", "refused")

# The public tables, their constraints and their unique indexes that back no constraint.
_TABLES = text(
    """
    SELECT c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
    ORDER BY c.relname
    """
)
_CONSTRAINTS = text(
    """
    SELECT t.relname AS table_name, k.conname AS name, k.contype AS kind,
           ARRAY(SELECT a.attname::text
                 FROM unnest(k.conkey) WITH ORDINALITY AS key(attnum, place)
                 JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = key.attnum
                 ORDER BY key.place) AS columns,
           r.relname AS referenced_table,
           ARRAY(SELECT a.attname::text
                 FROM unnest(k.confkey) WITH ORDINALITY AS key(attnum, place)
                 JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = key.attnum
                 ORDER BY key.place) AS referenced_columns
    FROM pg_constraint k
    JOIN pg_class t ON t.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_class r ON r.oid = k.confrelid
    WHERE n.nspname = 'public' AND k.contype IN ('p', 'u', 'f', 'c', 'x')
    """
)
_UNIQUE_INDEXES = text(
    """
    SELECT t.relname AS table_name, i.relname AS name,
           ARRAY(SELECT pg_get_indexdef(x.indexrelid, place, true)
                 FROM generate_series(1, x.indnkeyatts) AS place
                 ORDER BY place) AS columns,
           pg_get_expr(x.indpred, x.indrelid, true) AS predicate
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE n.nspname = 'public' AND x.indisunique
      AND NOT EXISTS (
          SELECT 1 FROM pg_constraint k
          WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
            AND k.contype IN ('p', 'u', 'x')
      )
    """
)


@dataclass(frozen=True, order=True)
class Constraint:
    """One constraint or unique index as the page's table writes it."""

    table: str
    name: str
    kind: str
    columns: str  # "a, b"; a foreign key "a, b → other(c, d)"; a partial index "a WHERE …"

    def key_columns(self) -> list[str]:
        return [part.strip() for part in self.columns.split("→")[0].split(" WHERE ")[0].split(",")]

    def referenced(self) -> tuple[str, list[str]]:
        """A foreign key's referenced table and columns."""
        found = re.fullmatch(r".*→\s*(\w+)\((.*)\)", self.columns)
        assert found, f"{self.table}.{self.name}: '{self.columns}' names no 'table(columns)'"
        return found.group(1), [part.strip() for part in found.group(2).split(",")]

    def row(self, verdict: str = "?", change: str = "?") -> str:
        return (
            f"| {self.table} | {self.name} | {self.kind} | {self.columns} | {verdict} | {change} |"
        )


@dataclass(frozen=True)
class Placement:
    table: str
    placement: str
    column: str | None
    colocate_with: str | None


# --- the page ------------------------------------------------------------------------------


def _table_after(markdown: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows of the markdown table whose header is ``header``, cells stripped."""
    lines = markdown.splitlines()
    wanted = "| " + " | ".join(header) + " |"
    assert wanted in lines, f"docs/scaling.md has no table headed '{wanted}'"
    start = lines.index(wanted) + 2  # the header, then its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), f"docs/scaling.md: {line!r} has {len(cells)} cells"
        rows.append(cells)
    return rows


def _placements(markdown: str) -> dict[str, Placement]:
    found: dict[str, Placement] = {}
    for table, placement, column, colocate_with in _table_after(markdown, PLACEMENT_HEADER):
        assert placement in PLACEMENTS, f"{table}: placement {placement!r} not in {PLACEMENTS}"
        assert table not in found, f"docs/scaling.md places {table} twice"
        found[table] = Placement(table, placement, column or None, colocate_with or None)
    return found


@dataclass(frozen=True)
class Documented:
    constraint: Constraint
    verdict: str
    change: str


def _documented(markdown: str) -> list[Documented]:
    rows = []
    for table, name, kind, columns, verdict, change in _table_after(markdown, CONSTRAINTS_HEADER):
        rows.append(Documented(Constraint(table, name, kind, columns), verdict, change))
    return rows


def _ddl_calls(markdown: str) -> list[str]:
    """The ``create_distributed_table`` / ``create_reference_table`` calls of the first
    SQL block that has any (the placement's DDL)."""
    for block in re.findall(r"```sql\n(.*?)```", markdown, re.DOTALL):
        calls = [line for line in block.splitlines() if line.startswith("SELECT create_")]
        if calls:
            return calls
    raise AssertionError("docs/scaling.md has no SQL block of create_*_table calls")


def _expected_call(placement: Placement) -> str | None:
    if placement.placement == "reference":
        return f"SELECT create_reference_table('{placement.table}');"
    if placement.placement == "distributed":
        return (
            f"SELECT create_distributed_table('{placement.table}', '{placement.column}',"
            f" colocate_with => '{placement.colocate_with}');"
        )
    return None


# --- the live schema -------------------------------------------------------------------------


def live_tables(connection: Connection) -> list[str]:
    return [str(name) for name in connection.execute(_TABLES).scalars()]


def live_constraints(connection: Connection) -> set[Constraint]:
    """Every constraint of the kinds in ``KINDS`` and every unique index that backs none,
    of the public tables, as the page writes them."""
    found = set()
    for row in connection.execute(_CONSTRAINTS):
        columns = ", ".join(row.columns)
        if row.kind == "f":
            columns += f" → {row.referenced_table}({', '.join(row.referenced_columns)})"
        found.add(Constraint(row.table_name, row.name, KINDS[row.kind], columns))
    for row in connection.execute(_UNIQUE_INDEXES):
        columns = ", ".join(row.columns)
        if row.predicate:
            columns += f" WHERE {row.predicate}"
        found.add(Constraint(row.table_name, row.name, "unique index", columns))
    return found


# --- Citus's rules (docs/scaling.md, the list at the top) ------------------------------------


def _group(placement: Placement, placements: dict[str, Placement]) -> str:
    """The colocation group: the table that started it."""
    seen = {placement.table}
    while placement.colocate_with not in (None, "none", "default"):
        placement = placements[str(placement.colocate_with)]
        assert placement.table not in seen, f"colocate_with loops at {placement.table}"
        seen.add(placement.table)
    return placement.table


def citus_verdict(constraint: Constraint, placements: dict[str, Placement]) -> str:
    """What Citus does with ``constraint`` under ``placements``: a key or unique index of a
    distributed table must include its distribution column; a foreign key is accepted
    between local tables, between reference tables, from a distributed or local table to a
    reference table, and between colocated distributed tables whose distribution columns
    stand at the same place in both column lists; a check constraint always."""
    own = placements[constraint.table]
    if constraint.kind == "check":
        return "accepted"
    if constraint.kind != "foreign key":
        if own.placement != "distributed":
            return "accepted"
        return "accepted" if own.column in constraint.key_columns() else "refused"
    referenced_table, referenced_columns = constraint.referenced()
    other = placements[referenced_table]
    if other.placement == "reference":
        return "accepted" if own.placement in ("distributed", "reference", "local") else "refused"
    if own.placement != other.placement:
        return "refused"
    if own.placement in ("local", "reference"):
        return "accepted"
    columns = constraint.key_columns()
    colocated = _group(own, placements) == _group(other, placements)
    same_place = (
        own.column in columns
        and other.column in referenced_columns
        and columns.index(str(own.column)) == referenced_columns.index(str(other.column))
    )
    return "accepted" if colocated and same_place else "refused"


# --- the check ------------------------------------------------------------------------------


def problems(connection: Connection, markdown: str) -> list[str]:
    """Everything the page and the live schema disagree on, each as what to write."""
    placements = _placements(markdown)
    tables = live_tables(connection)
    found = [
        f"placement: add '| {table} | distributed | user_id | users |' (or reference/local)"
        for table in tables
        if table not in placements
    ]
    found += [
        f"placement: '{table}' is placed, but the schema has no such table: remove it"
        for table in placements
        if table not in tables
    ]
    documented = _documented(markdown)
    by_constraint = {row.constraint: row for row in documented}
    assert len(by_constraint) == len(documented), "docs/scaling.md lists a constraint twice"
    live = live_constraints(connection)
    for constraint in sorted(live - set(by_constraint)):
        verdict = citus_verdict(constraint, placements) if constraint.table in placements else "?"
        found.append(
            f"constraints: {constraint.table}.{constraint.name} is not accounted for; add\n"
            f"{constraint.row(verdict, 'none' if verdict == 'accepted' else 'WHAT CITUS NEEDS')}"
        )
    for constraint in sorted(set(by_constraint) - live):
        found.append(
            f"constraints: '{constraint.table} | {constraint.name} | {constraint.kind}"
            f" | {constraint.columns}' is documented, but the schema has no such constraint"
            " (or not with these columns): remove or correct it"
        )
    for constraint in sorted(live & set(by_constraint)):
        row = by_constraint[constraint]
        if row.verdict not in VERDICTS:
            found.append(f"constraints: {constraint.name}: Citus column must be one of {VERDICTS}")
            continue
        expected = citus_verdict(constraint, placements)
        if row.verdict != expected:
            found.append(
                f"constraints: {constraint.table}.{constraint.name} is documented as"
                f" {row.verdict}, but under the placement Citus has it {expected}"
            )
        if row.verdict == "refused" and row.change.lower() in ("", "none", "-", "—"):
            found.append(
                f"constraints: {constraint.table}.{constraint.name} is refused: say the change"
            )
    return found


def test_every_constraint_is_accounted_for(engine: Engine) -> None:
    with engine.connect() as connection:
        found = problems(connection, SCALING_MD.read_text(encoding="utf-8"))
    assert not found, "docs/scaling.md and the live schema disagree:\n" + "\n".join(found)


def test_the_ddl_block_is_the_placement_table() -> None:
    markdown = SCALING_MD.read_text(encoding="utf-8")
    placements = _placements(markdown)
    expected = [call for call in map(_expected_call, placements.values()) if call]
    assert _ddl_calls(markdown) == expected


def test_every_distributed_table_has_its_distribution_column(engine: Engine) -> None:
    """The column each distributed table is placed by exists in the live schema."""
    placements = _placements(SCALING_MD.read_text(encoding="utf-8"))
    with engine.connect() as connection:
        missing = [
            f"{placement.table}.{placement.column}"
            for placement in placements.values()
            if placement.placement == "distributed"
            and not connection.execute(
                text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public'"
                    " AND table_name = :table AND column_name = :column"
                ),
                {"table": placement.table, "column": placement.column},
            ).first()
        ]
    assert not missing, f"placed by columns the schema does not have: {missing}"


_DISTRIBUTION_COLUMN = text(
    """
    SELECT a.attnotnull AS not_null, a.atttypid::regtype::text AS type_name,
           co.collname AS collation
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE n.nspname = 'public' AND c.relname = :table AND a.attname = :column
      AND NOT a.attisdropped
    """
)
# How the page names a distribution column Citus would refuse as it is (its section
# "What else Citus refuses"): a NULL distribution value, and a type or collation other
# than its colocation group's (the group's first table's).
_NULLABLE = re.compile(r"^- \*\*`(\w+)\.(\w+)` is nullable", re.MULTILINE)
_COLLATION = re.compile(r"^- \*\*`(\w+)\.(\w+)` has the collation `\"?([^`\"]+)\"?`", re.MULTILINE)
_TYPE = re.compile(r"^- \*\*`(\w+)\.(\w+)` has the type `([^`]+)`", re.MULTILINE)


def distribution_column_problems(connection: Connection, markdown: str) -> set[str]:
    """What Citus refuses of the distribution columns as they are (each as the page
    writes it: ``table.column nullable``, ``… collation C``, ``… type text``)."""
    return distribution_column_problems_under(connection, _placements(markdown))


def distribution_column_problems_under(
    connection: Connection, placements: dict[str, Placement]
) -> set[str]:
    found: set[str] = set()
    columns = {}
    for placement in placements.values():
        if placement.placement != "distributed":
            continue
        column = connection.execute(
            _DISTRIBUTION_COLUMN, {"table": placement.table, "column": placement.column}
        ).first()
        assert column is not None, f"{placement.table} has no column {placement.column}"
        columns[placement.table] = column
        if not column.not_null:
            found.add(f"{placement.table}.{placement.column} nullable")
    for placement in placements.values():
        if placement.table not in columns:
            continue
        leader = columns[_group(placement, placements)]
        column = columns[placement.table]
        where = f"{placement.table}.{placement.column}"
        if column.collation != leader.collation:
            found.add(f"{where} collation {column.collation}")
        if column.type_name != leader.type_name:
            found.add(f"{where} type {column.type_name}")
    return found


def _named_distribution_problems(markdown: str) -> set[str]:
    return (
        {f"{table}.{column} nullable" for table, column in _NULLABLE.findall(markdown)}
        | {f"{t}.{c} collation {name}" for t, c, name in _COLLATION.findall(markdown)}
        | {f"{t}.{c} type {name}" for t, c, name in _TYPE.findall(markdown)}
    )


def test_distribution_columns_that_citus_refuses_are_named(engine: Engine) -> None:
    """A distribution column that is nullable, or whose type or collation differs from
    its colocation group's, is named in the page (with the change it needs), and the
    page names no such problem the schema does not have."""
    markdown = SCALING_MD.read_text(encoding="utf-8")
    with engine.connect() as connection:
        live = distribution_column_problems(connection, markdown)
    assert live == _named_distribution_problems(markdown)


def test_a_new_distribution_column_problem_is_reported(engine: Engine) -> None:
    markdown = SCALING_MD.read_text(encoding="utf-8")
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(text('ALTER TABLE refunds ALTER COLUMN user_id TYPE text COLLATE "C"'))
        connection.execute(text("ALTER TABLE payments ALTER COLUMN user_id DROP NOT NULL"))
        live = distribution_column_problems(connection, markdown)
        transaction.rollback()
    assert live - _named_distribution_problems(markdown) == {
        "refunds.user_id collation C",
        "refunds.user_id type text",
        "payments.user_id nullable",
    }


def _sql_block(markdown: str, marker: str) -> str:
    blocks = [b for b in re.findall(r"```sql\n(.*?)```", markdown, re.DOTALL) if marker in b]
    assert len(blocks) == 1, f"docs/scaling.md: one SQL block with {marker!r} expected"
    return str(blocks[0])


def _statements(block: str) -> list[str]:
    """The block's statements, comments and Citus calls left out."""
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("--")]
    statements = [part.strip() for part in "\n".join(lines).split(";")]
    return [part for part in statements if part and "create_distributed_table" not in part]


_CALL = re.compile(r"create_distributed_table\('(\w+)', '(\w+)', colocate_with => '(\w+)'\)")


def test_after_the_migration_citus_refuses_nothing(engine: Engine) -> None:
    """The page's migration and lookup tables, run on the test database (in a transaction
    rolled back, without the Citus calls), leave no constraint and no distribution column
    that Citus's rules refuse under the placement plus the lookup tables' own."""
    markdown = SCALING_MD.read_text(encoding="utf-8")
    migration = _sql_block(markdown, "-- 1. Every foreign key")
    lookups = _sql_block(markdown, "CREATE TABLE refund_transactions")
    placements = _placements(markdown)
    for table, column, colocate_with in _CALL.findall(lookups):
        placements[table] = Placement(table, "distributed", column, colocate_with)
    before_fks, _, rest = migration.partition("-- (here:")
    after_fks = rest.split("\n", 1)[1]  # after that comment line
    with engine.connect() as connection, connection.begin() as transaction:
        for statement in _statements(before_fks) + _statements(lookups) + _statements(after_fks):
            connection.execute(text(statement))
        refused = sorted(
            constraint.row(citus_verdict(constraint, placements))
            for constraint in live_constraints(connection)
            if citus_verdict(constraint, placements) != "accepted"
        )
        unplaced = sorted(set(live_tables(connection)) - set(placements))
        column_problems = distribution_column_problems_under(connection, placements)
        transaction.rollback()
    assert (refused, unplaced, column_problems) == ([], [], set())


# --- the check fails when it should ---------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            ["CREATE UNIQUE INDEX ix_plans_merchant_reference ON plans (merchant_reference)"],
            "| plans | ix_plans_merchant_reference | unique index | merchant_reference | refused |",
        ),
        (
            [
                "ALTER TABLE refunds ADD CONSTRAINT uq_refunds_merchant_reference"
                " UNIQUE (merchant_reference)"
            ],
            "| refunds | uq_refunds_merchant_reference | unique | merchant_reference | refused |",
        ),
        (
            [
                "CREATE UNIQUE INDEX ix_payments_user_id_source ON payments (user_id, source)"
                " WHERE reference IS NULL"
            ],
            "| payments | ix_payments_user_id_source | unique index"
            " | user_id, source WHERE reference IS NULL | accepted |",
        ),
        (
            [
                "ALTER TABLE payments ADD CONSTRAINT uq_payments_user_id_id UNIQUE (user_id, id)",
                "ALTER TABLE refunds ADD CONSTRAINT fk_refunds_user_id_payments"
                " FOREIGN KEY (user_id, id) REFERENCES payments (user_id, id)",
            ],
            "| refunds | fk_refunds_user_id_payments | foreign key"
            " | user_id, id → payments(user_id, id) | accepted |",
        ),
        (
            [
                "ALTER TABLE webhook_events ADD CONSTRAINT fk_webhook_events_user_id_users"
                " FOREIGN KEY (user_id) REFERENCES users (user_id)"
            ],
            "| webhook_events | fk_webhook_events_user_id_users | foreign key"
            " | user_id → users(user_id) | refused |",
        ),
        (
            [
                "ALTER TABLE plans ADD CONSTRAINT ck_plans_merchant_reference"
                " CHECK (merchant_reference <> '')"
            ],
            "| plans | ck_plans_merchant_reference | check | merchant_reference | accepted |",
        ),
    ],
    ids=[
        "unique-index",
        "unique-constraint",
        "partial-with-user",
        "colocated-fk",
        "fk-across-groups",
        "check",
    ],
)
def test_a_new_constraint_is_reported(engine: Engine, statements: list[str], expected: str) -> None:
    """A constraint added (in a transaction, rolled back) that the page does not list is
    reported, with the row to add and the verdict Citus's rules give it."""
    markdown = SCALING_MD.read_text(encoding="utf-8")
    with engine.connect() as connection, connection.begin() as transaction:
        assert problems(connection, markdown) == []
        for statement in statements:
            connection.execute(text(statement))
        found = problems(connection, markdown)
        transaction.rollback()
    reported = "\n".join(found)
    assert expected in reported, reported


def test_a_documented_constraint_that_is_gone_is_reported(engine: Engine) -> None:
    markdown = SCALING_MD.read_text(encoding="utf-8")
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(
            text("ALTER TABLE installments DROP CONSTRAINT uq_installments_plan_id_sequence")
        )
        found = problems(connection, markdown)
        transaction.rollback()
    assert len(found) == 1, found
    assert "uq_installments_plan_id_sequence" in found[0] and "no such constraint" in found[0]


def test_a_wrong_verdict_is_reported(engine: Engine) -> None:
    """The verdict column is checked, not copied: calling a refused key accepted fails."""
    markdown = SCALING_MD.read_text(encoding="utf-8")
    wrong = markdown.replace(
        "| plans | pk_plans | primary key | id | refused |",
        "| plans | pk_plans | primary key | id | accepted |",
    )
    assert wrong != markdown
    with engine.connect() as connection:
        found = problems(connection, wrong)
    assert found == [
        "constraints: plans.pk_plans is documented as accepted, but under the placement"
        " Citus has it refused"
    ]
