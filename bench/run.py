"""The benchmark: workload W(N) at scale, timed through the product's own code paths.

Builds W(N) in a fresh database on the server at ``BNPL_DATABASE_URL``: N users
imported through ``bnplctl users import`` (timed), then, untimed and in bulk SQL,
ceil(10N/3) plans of 3 installments (half the installments past due), N PENDING
refunds and an N-row webhook file. It times the sweep and the ingest as
``bnplctl`` subprocesses beside their plain-SQL references on identical copies
of the tables, ``debt show`` in process, and the CLI at the terminal: ``--help``
beside a bare ``import typer``, and ``plans preview``, ``users show``, ``debt show``
and ``plans create`` as whole processes (start-up included). Peak memory is each
step's own child-process accounting (``RUSAGE_CHILDREN`` in a wrapper). The payments
file is also timed on copies of W(N) as bulk-loaded, in each state of the planner's
statistics (``payments_statistics``); and an N-row Adyen settlement report, imported
with its preset on another such copy, beside the plain-SQL writes it requires
(``payments_preset``); and ``keys rotate`` (every passport re-encrypted under a new key)
on another, with a copy of the key file, beside the plain-SQL writes it requires on a
second (``keys_rotation``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

AS_OF = date(2026, 6, 1)
# The terminal's targets (issue 14, item 4): each command's median wall time over CLI_RUNS
# whole processes, start-up included, on the benchmark's database; and ``--help`` against
# a bare ``python -c "import typer"``.
CLI_RUNS = 7
CLI_TARGETS_S = {
    "plans_preview_s": 0.30,
    "users_show_s": 0.30,
    "debt_show_s": 0.30,
    "plans_create_s": 0.45,
}
HELP_RATIO_TARGET = 1.5
# What every write on SQLModel pays before it does anything (issue 14 keeps the writes
# there): the interpreter, SQLModel, the models and the driver loaded, then an exit as
# quick as the CLI's own. ``plans_create_s`` is read against it.
ORM_FLOOR = "import os, psycopg2, bnplctl.models; os._exit(0)"
# The subject of ``debt show`` and ``users show`` in earlier reports: taken when it has
# overdue installments once swept (at most N; not at N = 120 to 129, for one), else the
# first user who has.
DEBTOR = "u0000001"
# Run a command and report its wall time and its own peak RSS (kB on Linux).
_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "started = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "elapsed = time.perf_counter() - started\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'code': done.returncode, 'seconds': elapsed, 'peak_kb': peak,"
    " 'stdout': done.stdout, 'stderr': done.stderr[-2000:]}))\n"
)


def luhn_complete(stem: str) -> str:
    """``stem`` and the check digit that makes it pass ``pii.luhn_valid``."""
    from bnplctl.pii import luhn_valid

    return next(stem + digit for digit in "0123456789" if luhn_valid(stem + digit))


USER_FIELDS = ("user_id", "name", "phone", "passport", "card", "dob")


def _letters(n: int) -> str:
    """``n`` in the letters A-Z (a name holds no long number: ``validators.person_name``)."""
    text = ""
    while True:
        n, digit = divmod(n, 26)
        text = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digit] + text
        if not n:
            return text


def user_id(n: int) -> str:
    """The workload's n-th user's id."""
    return f"u{n:07d}"


def user_row(n: int) -> list[str]:
    """The workload's n-th user: ``USER_FIELDS``, each unique to n."""
    return [
        user_id(n),
        f"Bench User {_letters(n)}",
        f"+99890{n:07d}",
        f"AB{n:07d}",
        luhn_complete(f"4{n:014d}"),
        (date(1960, 1, 1) + timedelta(days=n % 15000)).isoformat(),
    ]


def write_users(path: Path, count: int, *, minors: bool = False) -> None:
    """``count`` users; with ``minors``, every one born last year: each row rejected."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(USER_FIELDS)
        for n in range(count):
            row = user_row(n)
            if minors:
                row[-1] = date(date.today().year - 1, 1, 1).isoformat()
            writer.writerow(row)


def write_webhooks(path: Path, refunds: int, unknown_start: int) -> int:
    """~60 % approved, 30 % rejected/failed, 5 % exact duplicates, 5 % unknown ids."""
    rows: list[list[str]] = []
    picker = random.Random(7)  # noqa: S311 - reproducible workload, not security
    for n in range(1, refunds + 1):
        roll = n % 20
        if roll < 12:
            status = "approved"
        elif roll < 18:
            status = "rejected" if roll % 2 else "failed"
        elif roll == 18 and rows:
            rows.append(list(picker.choice(rows)))  # an exact duplicate of an earlier row
            continue
        else:
            rows.append([f"X-{unknown_start + n}", "approved", "M", f"u-{n}", ""])
            continue
        rows.append([f"T-{n}", status, f"M-{n}", f"e-{n}", "2026-05-31T12:00:00+00:00"])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["refund_id", "status", "merchant_reference", "event_id", "occurred_at"])
        writer.writerows(rows)
    return len(rows)


def write_payments(path: Path, users: int) -> int:
    """One payment per user of 30.00, to the user (oldest due first): each pays part of
    one installment. Also ~2 % exact duplicates of earlier rows and ~2 % unknown users."""
    rows: list[list[str]] = []
    picker = random.Random(13)  # noqa: S311 - reproducible workload, not security
    for n in range(users):
        roll = n % 50
        if roll == 48 and rows:
            rows.append(list(picker.choice(rows)))
            continue
        user_id = f"nobody-{n}" if roll == 49 else user_row(n)[0]
        rows.append([f"PAY-{n}", "30.00", user_id, "2026-05-31T12:00:00+00:00"])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference", "amount", "user_id", "paid_at"])
        writer.writerows(rows)
    return len(rows)


# The Adyen Settlement Details Report (issue 26, section 3): its columns in the order of
# Adyen's report, as tests/data/processors/adyen_settlement_detail_report_batch_118.csv
# (what ``bnplctl.importing.presets``' adyen-settlement preset reads).
ADYEN_PRESET = "adyen-settlement"
ADYEN_COLUMNS = (
    "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference",
    "Payment Method", "Creation Date", "TimeZone", "Type", "Modification Reference",
    "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate",
    "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)",
    "Scheme Fees (NC)", "Interchange (NC)", "Payment Method Variant",
    "Modification Merchant Reference", "Batch Number", "Reserved4", "Reserved5",
    "Reserved6", "Reserved7", "Reserved8", "Reserved9", "Reserved10",
)  # fmt: skip
ADYEN_CURRENCY = "EUR"
# The file's first row, in local time (summer: CEST); each row a second after the one before.
ADYEN_START = datetime(2026, 5, 31)
# Of each ADYEN_CYCLE rows: the first 95 ``Settled``, then three reversals of three of
# those 95 payments (the row type, and whether all of the payment is taken back), then a
# fee and a payout.
ADYEN_CYCLE = 100
ADYEN_PAYMENTS = 95
_ADYEN_REVERSALS = (("Refunded", False), ("Chargeback", True), ("Refunded", True))
_ADYEN_SKIPPED = ("Fee", "MerchantPayout")
_ADYEN_METHODS = (("visa", "visaclassic"), ("mc", "mccredit"), ("amex", "amex"))


@dataclass(frozen=True)
class SettlementFile:
    """What a generated settlement file holds: rows in all, and of them payments (each
    applied to the workload), reversals (each of a payment of the file) and rows skipped
    (fees, payouts)."""

    rows: int
    payments: int
    reversals: int
    skipped: int


def _cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _adyen_payment_cents(n: int) -> int:
    """The gross of the file's n-th row when it is a payment: 10.00 to 49.99, so that a
    user's payment pays part of their oldest installment (100.00 in W(N)), as
    ``write_payments``' do, and two of them would still fit in it."""
    return 1000 + (n * 7919) % 4000


def _adyen_psp(n: int) -> str:
    return f"88{n:014d}"


def write_adyen_settlement(
    path: Path, users: int, rows: int | None = None, *, seed: int = 17
) -> SettlementFile:
    """An Adyen Settlement Details Report of ``rows`` rows (default: ``users``), laid out
    as Adyen writes it (a byte-order mark, an unquoted header, CRLF line ends, as the
    batch 118 fixture of tests/data/processors):

    - 95 % ``Settled``: row n is a payment (Psp Reference ``88`` and n) of 10.00-49.99 by
      the user ``user_id(n % users)`` (Merchant Reference): with ``rows`` <= ``users`` one
      payment per user, each applied to the user's oldest installment;
    - 3 % reversals, ``Refunded`` (part of the payment, or all of it) and ``Chargeback``
      (all of it): each of a different payment earlier in the same 100 rows, under its
      own Modification Reference (``87`` and n), Gross Debit at most the payment;
    - 2 % ``Fee`` and ``MerchantPayout`` rows, without a Psp or Merchant Reference.

    Deterministic (``seed``), and written as generated: what a reversal needs of its
    payment is computed again from the payment's row number, so memory stays flat.
    """
    count = users if rows is None else rows
    picker = random.Random(seed)  # noqa: S311 - reproducible workload, not security
    payments = reversals = skipped = 0
    targets: list[int] = []
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(ADYEN_COLUMNS)
        for n in range(count):
            roll = n % ADYEN_CYCLE
            created = (ADYEN_START + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
            zone = "Europe/Amsterdam" if n % 10 == 9 else "CEST"
            fields = dict.fromkeys(ADYEN_COLUMNS, "")
            fields |= {
                "Company Account": "BnplCo",
                "Merchant Account": f"BnplCo{ADYEN_CURRENCY}",
                "Creation Date": created,
                "TimeZone": zone,
                "Batch Number": str(120 + n // 50_000),
            }
            if roll < ADYEN_PAYMENTS:
                gross = _adyen_payment_cents(n)
                method, variant = _ADYEN_METHODS[n % len(_ADYEN_METHODS)]
                markup, scheme, interchange = gross * 5 // 1000, gross // 1000, gross * 11 // 1000
                fields |= {
                    "Psp Reference": _adyen_psp(n),
                    "Merchant Reference": user_id(n % users),
                    "Payment Method": method,
                    "Type": "Settled",
                    "Modification Reference": f"89{n:014d}",
                    "Gross Currency": ADYEN_CURRENCY,
                    "Gross Credit (GC)": _cents(gross),
                    "Exchange Rate": "1",
                    "Net Currency": ADYEN_CURRENCY,
                    "Net Credit (NC)": _cents(gross - markup - scheme - interchange),
                    "Markup (NC)": _cents(markup),
                    "Scheme Fees (NC)": _cents(scheme),
                    "Interchange (NC)": _cents(interchange),
                    "Payment Method Variant": variant,
                }
                payments += 1
            elif roll < ADYEN_PAYMENTS + len(_ADYEN_REVERSALS):
                if roll == ADYEN_PAYMENTS:  # three different payments of these 100 rows
                    start = n - roll
                    targets = picker.sample(range(start, start + ADYEN_PAYMENTS), 3)
                row_type, whole = _ADYEN_REVERSALS[roll - ADYEN_PAYMENTS]
                paid = targets[roll - ADYEN_PAYMENTS]
                paid_cents = _adyen_payment_cents(paid)
                gross = paid_cents if whole else picker.randrange(100, paid_cents)
                method, variant = _ADYEN_METHODS[paid % len(_ADYEN_METHODS)]
                fee = 1500 if row_type == "Chargeback" else 12
                fields |= {
                    "Psp Reference": _adyen_psp(paid),
                    "Merchant Reference": user_id(paid % users),
                    "Payment Method": method,
                    "Type": row_type,
                    "Modification Reference": f"87{n:014d}",
                    "Gross Currency": ADYEN_CURRENCY,
                    "Gross Debit (GC)": _cents(gross),
                    "Exchange Rate": "1",
                    "Net Currency": ADYEN_CURRENCY,
                    "Net Debit (NC)": _cents(gross + fee),
                    "Commission (NC)" if row_type == "Chargeback" else "Markup (NC)": _cents(fee),
                    "Payment Method Variant": variant,
                    "Modification Merchant Reference": f"refund-{n}" if n % 2 else "",
                }
                reversals += 1
            else:
                row_type = _ADYEN_SKIPPED[roll - ADYEN_PAYMENTS - len(_ADYEN_REVERSALS)]
                cycle = n // ADYEN_CYCLE
                fields |= {
                    "Type": row_type,
                    "Modification Reference": "Transaction Fees May 2026"
                    if row_type == "Fee"
                    else f"TX{cycle:010d}XT batch 120, ABN AMRO Bank",
                    "Net Currency": ADYEN_CURRENCY,
                    "Net Debit (NC)": _cents(39 + cycle % 50 if row_type == "Fee" else 31195),
                }
                skipped += 1
            writer.writerow(fields.values())
    return SettlementFile(count, payments, reversals, skipped)


def measured(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    if result["code"] not in (0, 5):
        raise SystemExit(f"bench: {' '.join(args[:4])} failed: {result['stderr']}")
    return result


def bulk_setup(engine: Engine, users: int, *, analyse: bool = True) -> None:
    """Plans, installments (half past due at AS_OF) and PENDING refunds, in bulk SQL; then
    ``ANALYZE``, unless ``analyse`` is false (the tables then have no statistics at all)."""
    plans = -(-10 * users // 3)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO plans (user_id, total_amount, installment_count, start_date)"
                " SELECT u.user_id, 300, 3, CAST(:as_of AS date) - (g % 120)"
                " FROM generate_series(0, :plans - 1) AS g"
                " JOIN (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS n"
                "  FROM users) AS u ON u.n = g % :users"
            ),
            {"plans": plans, "users": users, "as_of": AS_OF},
        )
        # Due 30, 60 and 90 days after a start 0-119 days before AS_OF: half are past due.
        connection.execute(
            text(
                "INSERT INTO installments (plan_id, user_id, sequence, original_amount,"
                " amount_due, due_date)"
                " SELECT p.id, p.user_id, s, 100, 100, p.start_date + 30 * s"
                " FROM plans AS p, generate_series(1, 3) AS s"
            )
        )
        connection.execute(
            text(
                "INSERT INTO refunds (user_id, plan_id, transaction_id, amount)"
                " SELECT p.user_id, p.id, 'T-' || p.id, 40 FROM plans AS p WHERE p.id <= :users"
            ),
            {"users": users},
        )
        if analyse:
            connection.execute(text("ANALYZE"))


def no_autovacuum(engine: Engine) -> None:
    """Keep autovacuum off the workload's tables: it would start on its own schedule and
    take a core in the middle of whichever timed step was running (the product's sweep
    refreshes its statistics itself; the references' copies are analysed when made)."""
    with engine.begin() as connection:
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        for table in list(tables):
            connection.execute(
                text(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')  # noqa: S608
            )


def settle(engine: Engine, wait_s: float = 60.0) -> None:
    """Start a timed step on a quiet server: no autovacuum worker still busy in this
    database, and no other step's dirty pages (CHECKPOINT, where the role may, then the
    operating system's sync, when the server is on this machine)."""
    from sqlalchemy.exc import DBAPIError

    deadline = time.monotonic() + wait_s
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            busy = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'autovacuum worker'"
                )
            ).scalar_one()
            connection.rollback()
            if not busy:
                break
            time.sleep(0.5)
    try:
        with engine.begin() as connection:
            connection.execute(text("CHECKPOINT"))
    except DBAPIError:  # needs superuser or pg_checkpoint; the figures are noisier without
        pass
    # The checkpoint's writes sit in the page cache; flushed in the background they
    # would slow every commit's WAL flush in the next step. Wait for them here instead.
    os.sync()


def table_shape(connection: Any, table: str) -> dict[str, Any]:
    """What makes a table's writes cost what they cost, without its name: columns, indexes,
    constraints and storage parameters (``pg_class.reloptions``)."""
    oid = {"table": table}
    columns = connection.execute(
        text(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), attstorage, attcollation"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d"
            "  ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum"
        ),
        oid,
    ).all()
    indexes = connection.execute(
        text(
            "SELECT regexp_replace(indexdef, '^(CREATE (UNIQUE )?INDEX )\\S+ ON \\S+', '\\1')"
            " || coalesce(' WITH ' || c.reloptions::text, '')"
            " FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname"
            "  AND c.relnamespace = CAST(i.schemaname AS regnamespace)"
            " WHERE i.tablename = :table AND i.schemaname = current_schema()"
        ),
        oid,
    ).scalars()
    constraints = connection.execute(
        text(
            "SELECT contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = CAST(:table AS regclass)"
        ),
        oid,
    ).scalars()
    reloptions = connection.execute(
        text("SELECT reloptions FROM pg_class WHERE oid = CAST(:table AS regclass)"), oid
    ).scalar_one()
    return {
        "columns": [tuple(row) for row in columns],
        "indexes": sorted(indexes),
        "constraints": sorted(constraints),
        "reloptions": sorted(reloptions or []),
    }


def prepare_tables(engine: Engine, tables: list[str]) -> None:
    """Vacuum and analyse ``tables`` alike (hint bits, visibility map, statistics), so that
    a product step and its reference start from tables in the same state."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM (ANALYZE) {', '.join(tables)}"))


def copy_tables(
    engine: Engine, prefix: str, filled: tuple[str, ...], empty: tuple[str, ...] = ()
) -> None:
    """``prefix``-named exact copies of tables: the same columns, indexes, constraints
    (foreign keys to the same parents) and storage parameters, ``filled`` with their rows,
    ``empty`` without. The sources and the copies are then vacuumed and analysed alike,
    checked to have the same shape, and checkpointed, so that the timed step starts clean.
    """
    with engine.begin() as connection:
        for table in (*filled, *empty):
            copy = f"{prefix}{table}"
            reloptions = connection.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = CAST(:table AS regclass)"),
                {"table": table},
            ).scalar_one()
            storage = f" WITH ({', '.join(reloptions)})" if reloptions else ""
            connection.execute(text(f"DROP TABLE IF EXISTS {copy}"))
            connection.execute(
                text(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL){storage}")  # noqa: S608
            )
            foreign_keys = connection.execute(
                text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = CAST(:table AS regclass) AND contype = 'f'"
                ),
                {"table": table},
            ).scalars()
            for definition in list(foreign_keys):
                connection.execute(text(f"ALTER TABLE {copy} ADD {definition}"))
        for table in filled:
            connection.execute(text(f"INSERT INTO {prefix}{table} SELECT * FROM {table}"))  # noqa: S608
            # An identity column of a copy has a sequence of its own: past the copied ids.
            sequence = connection.execute(
                text(
                    "SELECT pg_get_serial_sequence(:copy, attname) FROM pg_attribute"
                    " WHERE attrelid = CAST(:copy AS regclass) AND attidentity <> ''"
                ),
                {"copy": f"{prefix}{table}"},
            ).scalar()
            if sequence is not None:
                connection.execute(
                    text(
                        "SELECT setval(CAST(:sequence AS regclass),"
                        f" (SELECT coalesce(max(id), 0) + 1 FROM {prefix}{table}), false)"  # noqa: S608
                    ),
                    {"sequence": sequence},
                )
        for table in (*filled, *empty):
            if table_shape(connection, table) != table_shape(connection, f"{prefix}{table}"):
                raise SystemExit(f"bench: {prefix}{table} is not an exact copy of {table}")
    tables = [*filled, *empty]
    prepare_tables(engine, tables + [f"{prefix}{table}" for table in tables])
    settle(engine)


def drop_tables(engine: Engine, prefix: str, tables: tuple[str, ...]) -> None:
    with engine.begin() as connection:
        for table in tables:
            connection.execute(text(f"DROP TABLE IF EXISTS {prefix}{table}"))


def reference_sweep(engine: Engine, cutoff: date) -> float:
    """The two plain UPDATEs, the second with one ``user.status_changed`` audit row per
    user it marks (rule 3), one transaction, on identical copies of the tables."""
    filled = ("users", "installments", "audit_events")
    copy_tables(engine, "ref_", filled)
    with engine.begin() as connection:
        started = time.perf_counter()
        connection.execute(
            text(
                "UPDATE ref_installments"
                " SET status = 'OVERDUE', overdue_since = :cutoff, overdue_run_id = 1"
                " WHERE status = 'UPCOMING' AND due_date < :cutoff"
            ),
            {"cutoff": cutoff},
        )
        connection.execute(
            text(
                "WITH marked AS ("
                " UPDATE ref_users SET status = 'DEBT_USER' WHERE status = 'NORMAL' AND user_id IN"
                "  (SELECT user_id FROM ref_installments WHERE status = 'OVERDUE')"
                " RETURNING user_id)"
                " INSERT INTO ref_audit_events (occurred_at, actor, action, entity, entity_id,"
                "  user_id, details)"
                " SELECT now(), 'bench', 'user.status_changed', 'user', user_id, user_id,"
                "  jsonb_build_object('from', 'NORMAL', 'to', 'DEBT_USER', 'run_id', 1,"
                "  'business_date', CAST(:cutoff AS date))"
                " FROM marked"
            ),
            {"cutoff": cutoff},
        )
    elapsed = time.perf_counter() - started
    drop_tables(engine, "ref_", filled)
    return elapsed


_WEBHOOK_ROWS = (
    "refund_id text, status text, merchant_reference text, event_id text, occurred_at timestamptz"
)
_PAYMENT_ROWS = "reference text, amount numeric(12, 2), user_id text, paid_at timestamptz"


def timed_file_load(
    engine: Engine, webhook_file: Path, statements: list[str], columns_ddl: str = _WEBHOOK_ROWS
) -> float:
    """Seconds to load the webhook file as the product does, a chunk per transaction (the
    product's chunk sizes, ``batch.chunk_sizes``): COPY the chunk into a temporary
    ``file_rows`` table, run ``statements``, commit. Each chunk's transaction has the
    product's planner settings (index lookups, no hash of a whole table per chunk), so
    that a reference is not slower than the floor it stands for."""
    from bnplctl.context import CHUNK_ROWS
    from bnplctl.importing.batch import ramped_chunks
    from bnplctl.tuning import INDEX_LOOKUPS_ONLY

    with webhook_file.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    chunks = []
    for rows_of_chunk in ramped_chunks(rows, CHUNK_ROWS):  # the product's chunks
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows_of_chunk)
        chunks.append(buffer.getvalue())
    columns = ", ".join(header)
    raw = engine.raw_connection()
    try:
        started = time.perf_counter()
        cursor = raw.cursor()
        for chunk in chunks:
            cursor.execute(
                f"CREATE TEMP TABLE file_rows ({columns_ddl}) ON COMMIT DROP;" + INDEX_LOOKUPS_ONLY
            )
            cursor.copy_expert(
                f"COPY file_rows ({columns}) FROM STDIN WITH (FORMAT csv)", io.StringIO(chunk)
            )
            for statement in statements:
                cursor.execute(statement)
            raw.commit()
        cursor.close()
        return time.perf_counter() - started
    finally:
        raw.close()


def reference_ingest(engine: Engine, webhook_file: Path) -> float:
    """COPY into a temporary table plus one UPDATE … FROM, on a copy of the refunds."""
    copy_tables(engine, "ref_", ("refunds",))
    try:
        return timed_file_load(
            engine,
            webhook_file,
            [
                "UPDATE ref_refunds r SET status = CASE w.status WHEN 'approved' THEN"
                " 'APPROVED' ELSE 'REJECTED' END, processed_at = now()"
                " FROM file_rows w WHERE w.refund_id = r.transaction_id"
                " AND r.status = 'PENDING'"
            ],
        )
    finally:
        drop_tables(engine, "ref_", ("refunds",))


_WRITES = (
    "CREATE TEMP TABLE refw_moved ON COMMIT DROP AS WITH moved AS ("
    " UPDATE refw_refunds r SET status = CASE w.status WHEN 'approved'"
    "  THEN 'COMPLETED' ELSE 'REJECTED' END,"
    "  applied_amount = CASE w.status WHEN 'approved' THEN r.amount END,"
    "  payout_amount = CASE w.status WHEN 'approved' THEN 0 END,"
    "  last_event_at = w.occurred_at, merchant_reference = w.merchant_reference,"
    "  processed_at = now(), updated_at = now()"
    " FROM (SELECT DISTINCT ON (refund_id) * FROM file_rows) w"
    " WHERE w.refund_id = r.transaction_id AND r.status = 'PENDING'"
    " RETURNING r.id, r.user_id, r.plan_id, r.amount, r.status, w.event_id)"
    " SELECT * FROM moved",
    "UPDATE refw_installments i SET amount_due = i.amount_due - m.amount"
    " FROM refw_moved m WHERE m.status = 'COMPLETED' AND i.plan_id = m.plan_id"
    " AND i.sequence = 3",
    "INSERT INTO refw_audit_events (occurred_at, actor, action, entity, entity_id, user_id,"
    " details) SELECT now(), 'bench', 'refund.status_changed', 'refund', id::text, user_id,"
    " jsonb_build_object('from', 'PENDING', 'to', status, 'event_id', event_id,"
    " 'plan_id', plan_id, 'applied_amount', amount) FROM refw_moved",
    "INSERT INTO refw_webhook_events (event_id, refund_id, user_id, status, outcome,"
    " occurred_at) SELECT w.event_id, r.id, r.user_id, w.status, 'applied', w.occurred_at"
    " FROM file_rows w JOIN refw_refunds r ON r.transaction_id = w.refund_id"
    " WHERE w.event_id IS NOT NULL ON CONFLICT (event_id) DO NOTHING",
)


def reference_ingest_writes(engine: Engine, webhook_file: Path) -> float:
    """The durable writes the ingest must make, as plain SQL on copies of the tables.

    Not a target's reference (that is ``reference_ingest``): the floor of what the ingest
    writes, for reading the product's own overhead. Per chunk of the file, in one
    transaction as the product's, COPY, then: the refunds move (approvals to COMPLETED
    with applied and payout amounts), each approval cuts its plan's last installment (the
    workload's refunds are smaller than one installment), one audit row per moved refund,
    one event-log row per event.
    No validation, no classification, no locks.
    """
    filled = ("refunds", "installments", "audit_events")
    empty = ("webhook_events",)
    copy_tables(engine, "refw_", filled, empty)
    try:
        return timed_file_load(engine, webhook_file, list(_WRITES))
    finally:
        drop_tables(engine, "refw_", (*filled, *empty))


# The payments file's required writes, per chunk: each known user's payment recorded,
# allocated to the user's oldest unpaid installment (found as the product finds it:
# the user's ACTIVE plans, then their installments), that installment's amount lowered,
# one audit row per payment. Repeated references (in the chunk, or recorded by an earlier
# chunk: the unique index is looked up) and unknown users write nothing.
_PAYMENT_WRITES = (
    "CREATE TEMP TABLE refp_target ON COMMIT DROP AS"
    " SELECT DISTINCT ON (f.user_id) f.reference, f.amount, f.user_id, f.paid_at,"
    "  i.id AS installment_id, nextval(pg_get_serial_sequence('refp_payments', 'id')) AS id"
    " FROM (SELECT DISTINCT ON (reference) * FROM file_rows) f"
    " JOIN plans p ON p.user_id = f.user_id AND p.status = 'ACTIVE'"
    " AND NOT EXISTS (SELECT 1 FROM refp_payments r WHERE r.reference = f.reference)"
    " JOIN refp_installments i ON i.plan_id = p.id AND i.status <> 'PAID'"
    " ORDER BY f.user_id, i.due_date, i.plan_id, i.sequence",
    "INSERT INTO refp_payments (id, reference, user_id, amount, source, paid_at, actor)"
    " SELECT id, reference, user_id, amount, 'bench.csv', paid_at, 'bench' FROM refp_target",
    "INSERT INTO refp_payment_allocations (payment_id, installment_id, user_id, amount)"
    " SELECT id, installment_id, user_id, amount FROM refp_target",
    "UPDATE refp_installments i SET amount_due = i.amount_due - t.amount"
    " FROM refp_target t WHERE i.id = t.installment_id",
    "INSERT INTO refp_audit_events (occurred_at, actor, action, entity, entity_id, user_id,"
    " details) SELECT now(), 'bench', 'payment.recorded', 'payment', id::text, user_id,"
    " jsonb_build_object('amount', amount::text, 'source', 'bench.csv', 'reference',"
    " reference) FROM refp_target",
)


def refer_to_copies(engine: Engine, prefix: str, links: tuple[tuple[str, str, str], ...]) -> None:
    """Each (table, column, parent): the ``prefix`` copy of the table refers to the copy of
    the parent by its ``id`` (``copy_tables`` keeps the foreign keys to the originals), as
    the product's table refers to its parent."""
    with engine.begin() as connection:
        for table, column, parent in links:
            name = connection.execute(
                text(
                    "SELECT conname FROM pg_constraint WHERE contype = 'f'"
                    " AND conrelid = CAST(:copy AS regclass)"
                    " AND confrelid = CAST(:parent AS regclass)"
                ),
                {"copy": f"{prefix}{table}", "parent": parent},
            ).scalar_one()
            connection.execute(
                text(
                    f'ALTER TABLE {prefix}{table} DROP CONSTRAINT "{name}",'
                    f" ADD FOREIGN KEY ({column}) REFERENCES {prefix}{parent} (id)"
                )
            )


def reference_payment_writes(engine: Engine, payments_file: Path) -> float:
    """The durable writes a payments file must make, as plain SQL on copies of the tables
    (``_PAYMENT_WRITES``), per chunk as the product commits. The allocations' copy refers
    to the payments' copy, as the product's table refers to its payments."""
    filled = ("installments", "audit_events")
    empty = ("payments", "payment_allocations")
    copy_tables(engine, "refp_", filled, empty)
    refer_to_copies(engine, "refp_", (("payment_allocations", "payment_id", "payments"),))
    try:
        return timed_file_load(engine, payments_file, list(_PAYMENT_WRITES), _PAYMENT_ROWS)
    finally:
        drop_tables(engine, "refp_", (*filled, "payment_allocations", "payments"))


# A settlement file's required writes (``reference_preset_writes``), per chunk: the rows
# the file's records come to, with every value computed before the timing (``kind``
# payment, reversal or skipped; a reversal's ``original_reference`` and ``note``, its row
# type), COPYed; each known user's payment recorded and allocated as ``_PAYMENT_WRITES``
# does; each reversal of a recorded payment (this chunk's or an earlier one's) recorded
# and allocated, undoing what it takes back of its payment's allocation (every payment of
# the file pays part of one installment, so a reversal undoes part or all of that one),
# the installment's amount raised again; one audit row per payment and one per reversal.
# Repeated references write nothing; skipped rows nothing.
_PRESET_ROWS = (
    "kind text, reference text, original_reference text, user_id text,"
    " amount numeric(12, 2), at timestamptz, note text"
)
_PRESET_WRITES = (
    "CREATE TEMP TABLE refa_paid ON COMMIT DROP AS"
    " SELECT t.*, nextval(pg_get_serial_sequence('refa_payments', 'id')) AS id FROM ("
    "  SELECT DISTINCT ON (f.user_id) f.reference, f.amount, f.user_id, f.at,"
    "   i.id AS installment_id"
    "  FROM (SELECT DISTINCT ON (reference) * FROM file_rows WHERE kind = 'payment') f"
    "  JOIN plans p ON p.user_id = f.user_id AND p.status = 'ACTIVE'"
    "  AND NOT EXISTS (SELECT 1 FROM refa_payments r WHERE r.reference = f.reference)"
    "  JOIN refa_installments i ON i.plan_id = p.id AND i.status <> 'PAID'"
    "  ORDER BY f.user_id, i.due_date, i.plan_id, i.sequence) t",
    "INSERT INTO refa_payments (id, reference, user_id, amount, source, paid_at, actor)"
    " SELECT id, reference, user_id, amount, 'bench.csv', at, 'bench' FROM refa_paid",
    "INSERT INTO refa_payment_allocations (payment_id, installment_id, user_id, amount)"
    " SELECT id, installment_id, user_id, amount FROM refa_paid",
    "UPDATE refa_installments i SET amount_due = i.amount_due - t.amount"
    " FROM refa_paid t WHERE i.id = t.installment_id",
    "CREATE TEMP TABLE refa_undone ON COMMIT DROP AS"
    " SELECT t.*, nextval(pg_get_serial_sequence('refa_payment_reversals', 'id')) AS id"
    " FROM (SELECT f.reference, f.amount, f.at, f.note, p.id AS payment_id,"
    "  p.reference AS payment_reference, a.user_id, a.installment_id"
    "  FROM (SELECT DISTINCT ON (reference) * FROM file_rows WHERE kind = 'reversal') f"
    "  JOIN refa_payments p ON p.reference = f.original_reference"
    "  AND NOT EXISTS (SELECT 1 FROM refa_payment_reversals r WHERE r.reference = f.reference)"
    "  JOIN refa_payment_allocations a ON a.payment_id = p.id) t",
    "INSERT INTO refa_payment_reversals (id, reference, payment_id, user_id, amount, reason,"
    " source, reversed_at, actor) SELECT id, reference, payment_id, user_id, amount, note,"
    " 'bench.csv', at, 'bench' FROM refa_undone",
    "INSERT INTO refa_reversal_allocations (payment_id, installment_id, reversal_id, user_id,"
    " amount) SELECT payment_id, installment_id, id, user_id, amount FROM refa_undone",
    "UPDATE refa_installments i SET amount_due = i.amount_due + u.amount"
    " FROM refa_undone u WHERE i.id = u.installment_id",
    "INSERT INTO refa_audit_events (occurred_at, actor, action, entity, entity_id, user_id,"
    " details) SELECT now(), 'bench', 'payment.recorded', 'payment', id::text, user_id,"
    " jsonb_build_object('amount', amount::text, 'source', 'bench.csv', 'reference',"
    " reference) FROM refa_paid"
    " UNION ALL SELECT now(), 'bench', 'payment.reversed', 'payment', payment_id::text,"
    " user_id, jsonb_build_object('reversal_id', id, 'reference', reference, 'amount',"
    " amount::text, 'source', 'bench.csv', 'reason', note)"
    " FROM refa_undone",
)
# The copies a settlement file's reference writes, children before their parents.
PRESET_FILLED = ("installments", "audit_events")
PRESET_EMPTY = ("payments", "payment_allocations", "payment_reversals", "reversal_allocations")
PRESET_COPIES = (
    "reversal_allocations", "payment_reversals", "payment_allocations", "payments",
    "installments", "audit_events",
)  # fmt: skip
_ADYEN_KINDS = {"Settled": "payment", "Refunded": "reversal", "Chargeback": "reversal"}
_ADYEN_SKIPS = frozenset(_ADYEN_SKIPPED)


def adyen_write_rows(adyen_file: Path) -> Iterator[list[str]]:
    """The records of a file ``write_adyen_settlement`` wrote, as the rows the reference
    loads (``_PRESET_ROWS``): the kind, the references, the user, the amount (the gross
    credit of a payment, the gross debit of a reversal), when in UTC (Creation Date in its
    TimeZone), the row type of a reversal. A row type the generator does not write stops
    the bench."""
    from bnplctl.importing.presets import zone_named

    with adyen_file.open(encoding="utf-8-sig", newline="") as handle:
        for record in csv.DictReader(handle):
            row_type = record["Type"]
            if row_type in _ADYEN_SKIPS:
                yield ["skipped", "", "", "", "", "", ""]
                continue
            kind = _ADYEN_KINDS.get(row_type)
            if kind is None:
                raise SystemExit(f"bench: {adyen_file.name}: unexpected Type {row_type!r}")
            zone = zone_named(record["TimeZone"])
            local = datetime.strptime(record["Creation Date"], "%Y-%m-%d %H:%M:%S")
            at = local.replace(tzinfo=zone).astimezone(UTC).isoformat()
            if kind == "payment":
                yield [
                    kind, record["Psp Reference"], "", record["Merchant Reference"],
                    record["Gross Credit (GC)"], at, "",
                ]  # fmt: skip
            else:
                yield [
                    kind, record["Modification Reference"], record["Psp Reference"],
                    record["Merchant Reference"], record["Gross Debit (GC)"], at, row_type,
                ]  # fmt: skip


def reference_preset_writes(engine: Engine, adyen_file: Path, *, keep: bool = False) -> float:
    """The durable writes an Adyen settlement file must make (rule 10 for its payments,
    rule 12 for its reversals), as plain SQL on copies of the tables (``_PRESET_WRITES``),
    per chunk as the product commits (the chunks of the file's records, skipped rows
    included). The file's values are computed before the timing (``adyen_write_rows``).
    The copies of the allocations and the reversals refer to the copies of their parents,
    as the product's tables do. With ``keep``, the copies stay (``refa_``, the caller drops
    them: ``drop_tables(engine, "refa_", PRESET_COPIES)``)."""
    with tempfile.TemporaryDirectory(prefix="refa-", dir=adyen_file.parent) as scratch:
        rows_file = Path(scratch) / "rows.csv"
        with rows_file.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["kind", "reference", "original_reference", "user_id", "amount",
                             "at", "note"])  # fmt: skip
            writer.writerows(adyen_write_rows(adyen_file))
        copy_tables(engine, "refa_", PRESET_FILLED, PRESET_EMPTY)
        try:
            refer_to_copies(
                engine,
                "refa_",
                (
                    ("payment_allocations", "payment_id", "payments"),
                    ("payment_reversals", "payment_id", "payments"),
                    ("reversal_allocations", "reversal_id", "payment_reversals"),
                    ("reversal_allocations", "payment_id", "payments"),
                ),
            )
            return timed_file_load(engine, rows_file, list(_PRESET_WRITES), _PRESET_ROWS)
        finally:
            if not keep:
                drop_tables(engine, "refa_", PRESET_COPIES)


@contextmanager
def database_copy(server_url: str, template: str, name: str) -> Iterator[str]:
    """A copy of the database ``template`` (nobody connected to it) named ``name``, dropped
    at the end; yields its URL. The copy has the template's statistics, or none, as it has."""
    from bnplctl.db import normalize_url

    server = normalize_url(server_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# The states of the planner's statistics a payments file is timed in (issue 28, item 9):
# ``analysed`` as the bench's main run (``ANALYZE`` after the bulk load); ``unanalysed``, a
# fresh bulk load that nothing has analysed yet (autovacuum is off for the workload's
# tables); ``stale``, statistics taken after a ``--dry-run`` of the same file, when the
# payments table held rolled-back rows only (ANALYZE then records pages without live rows,
# and the planner takes the table for empty however much it grows); ``vacuumed``, the bulk
# load VACUUMed but never ANALYZEd (the tables' sizes known, no column statistics: a
# plans-installments join inside a payment's lookup scanned every installment for each
# payment, minutes a chunk, before each became a lookup of its own).
STATISTICS_STATES = ("analysed", "unanalysed", "stale", "vacuumed")
STATISTICS_RATIO_TARGET = 3.0


def payments_statistics(
    server_url: str, template: str, payments_file: Path, env: dict[str, str]
) -> dict[str, Any]:
    """The ``payments_statistics`` block: the payments file imported on copies of the
    workload (``template``: W(N) bulk-loaded, never analysed), one per state of
    ``STATISTICS_STATES``, one after the other; each state's seconds and its ratio to the
    analysed run, and whether every copy applied the same rows."""
    bnplctl = [sys.executable, "-m", "bnplctl"]
    seconds: dict[str, float] = {}
    applied: dict[str, int] = {}
    for state in STATISTICS_STATES:
        with database_copy(server_url, template, f"{template}_{state}") as url:
            copy_env = dict(env, BNPL_DATABASE_URL=url)
            command = [*bnplctl, "payments", "import", str(payments_file), "-o", "json"]
            if state == "stale":  # 5: some rows not applied, as the workload has
                measured([*command, "--dry-run"], copy_env)
            engine = create_engine(url)
            try:
                if state == "vacuumed":  # the tables' sizes known, no column statistics
                    with engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    ) as connection:
                        connection.execute(text("VACUUM"))
                elif state != "unanalysed":
                    with engine.begin() as connection:
                        connection.execute(text("ANALYZE"))
                settle(engine)
                run = measured(command, copy_env)
            finally:
                engine.dispose()
        seconds[state] = run["seconds"]
        applied[state] = json.loads(run["stdout"])["applied"]
    figures: dict[str, Any] = {"applied": applied["analysed"]}
    figures["same_outcome"] = len(set(applied.values())) == 1
    for state in STATISTICS_STATES:
        figures[f"{state}_seconds"] = round(seconds[state], 3)
    for state in STATISTICS_STATES[1:]:
        figures[f"{state}_ratio"] = round(seconds[state] / seconds["analysed"], 2)
    figures["targets"] = {
        f"{state}_ratio": figures[f"{state}_ratio"] <= STATISTICS_RATIO_TARGET
        for state in STATISTICS_STATES[1:]
    }
    return figures


# A processor's own settlement file imported with its preset (issue 26, section 3): its
# time against the plain-SQL writes it requires.
PRESET_WRITES_RATIO_TARGET = 1.5


def payments_preset(
    server_url: str, template: str, adyen_file: Path, expected: SettlementFile, env: dict[str, str]
) -> dict[str, Any]:
    """The ``payments_preset`` block: the Adyen settlement file (``write_adyen_settlement``)
    imported with ``--preset adyen-settlement`` on a fresh copy of W(N) (``template``:
    bulk-loaded, nothing swept, paid or ingested; analysed here, as the main run's
    database), beside its required writes on copies of that copy's tables
    (``reference_preset_writes``): the outcomes, the seconds, the peak memory and the
    writes ratio against its target. An outcome other than the file was built to give
    (each payment applied, each reversal reversed, each fee and payout skipped) stops
    the bench: a timing of other work would mean nothing."""
    bnplctl = [sys.executable, "-m", "bnplctl"]
    with database_copy(server_url, template, f"{template}_preset") as url:
        # The file's currency, whatever the caller's environment says (unset, the first
        # row's would be taken).
        copy_env = dict(env, BNPL_DATABASE_URL=url, BNPL_CURRENCY=ADYEN_CURRENCY)
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
            writes = reference_preset_writes(engine, adyen_file)
            settle(engine)
            command = [*bnplctl, "payments", "import", str(adyen_file), "--preset", ADYEN_PRESET]
            imported = measured([*command, "-o", "json"], copy_env)
        finally:
            engine.dispose()
    summary = json.loads(imported["stdout"])
    outcomes = {
        "rows": summary["rows"],
        "applied": summary["applied"],
        "reversed": summary["reversed"],
        "skipped": summary["skipped"],
    }
    wanted = {
        "rows": expected.rows,
        "applied": expected.payments,
        "reversed": expected.reversals,
        "skipped": expected.skipped,
    }
    if outcomes != wanted or imported["code"] != 0:
        raise SystemExit(
            f"bench: payments import --preset {ADYEN_PRESET} exited {imported['code']} with"
            f" {outcomes}, expected {wanted}: {imported['stderr']}"
        )
    figures: dict[str, Any] = outcomes | {
        "seconds": round(imported["seconds"], 3),
        "peak_rss_mb": round(imported["peak_kb"] / 1024, 1),
        "writes_reference_seconds": round(writes, 3),
        "writes_ratio": round(imported["seconds"] / writes, 2),
    }
    figures["targets"] = {"writes_ratio": figures["writes_ratio"] <= PRESET_WRITES_RATIO_TARGET}
    return figures


# Rotating the secret key (issue 27, "Figures (benchmark, keys section)"): ``keys rotate``
# at N users against these targets, and against the plain-SQL writes it requires.
KEYS_USERS_PER_S_TARGET = 20_000
KEYS_PEAK_RSS_MB_TARGET = 150.0
KEYS_WRITES_RATIO_TARGET = 1.5
# The rotation's progress, as the product records it after each batch (``_reencrypt``).
_ROTATION_PROGRESS = (
    "UPDATE key_rotations SET rows_done = rows_done + %(updated)s, last_user_id = %(after)s"
    " WHERE id = %(id)s"
)


def prepare_rotation_copy(engine: Engine) -> None:
    """A copy of W(N) as bulk-loaded made ready for a rotation or its reference, each copy
    alike: analysed as the main run's database, the users vacuumed (hint bits, visibility
    map), then checkpointed."""
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    prepare_tables(engine, ["users"])


def reference_rotation_writes(engine: Engine, key_file: Path) -> tuple[float, int]:
    """The writes a rotation of every passport requires, as plain SQL (seconds, rows
    written). Untimed: the users read in the product's batches (``BATCH_ROWS``, in
    ``user_id`` order, as ``services.keys._BATCH``), each passport decrypted under the key file's
    primary key and encrypted (bound to its row) and blind-indexed under a fresh key, a
    check of that key and an open rotation recorded as ``_start`` records them. Timed:
    per batch, one transaction of the product's own ``UPDATE … FROM unnest(…)``
    (``services.keys._UPDATE``) and the rotation's progress (``_ROTATION_PROGRESS``). No
    lock, no read, no decryption, no process start."""
    from bnplctl import crypto
    from bnplctl.services.keys import _UPDATE, BATCH_ROWS

    found = crypto.read_keyring(key_file)
    if found is None:
        raise SystemExit(f"bench: {key_file} does not exist")
    old = crypto.Keyring(found.usable(), found.primary.key_id)
    new_id = max(entry.key_id for entry in found.entries) + 1
    new = crypto.SecretKey(crypto.new_key(), new_id)
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "SELECT user_id, passport_ciphertext FROM users WHERE passport_key_id <> :to"
                " ORDER BY user_id"
            ),
            {"to": new_id},
        ).all()
        connection.execute(
            text("INSERT INTO secret_keys (key_id, key_check) VALUES (:id, :check)"),
            {"id": new_id, "check": new.key_check()},
        )
        rotation_id = connection.execute(
            text(
                "INSERT INTO key_rotations (from_key_id, to_key_id, actor, started_at,"
                " rows_total) VALUES (:old, :new, 'bench', now(), :total) RETURNING id"
            ),
            {"old": found.primary.key_id, "new": new_id, "total": len(rows)},
        ).scalar_one()
    batches: list[dict[str, Any]] = []
    for start in range(0, len(rows), BATCH_ROWS):
        ids, sealed, indexes, was = [], [], [], []
        for user_id, blob in rows[start : start + BATCH_ROWS]:
            blob = bytes(blob)
            passport = old.decrypt_passport(blob, user_id)
            ids.append(user_id)
            sealed.append(new.encrypt_passport(passport, user_id))
            indexes.append(new.passport_index(passport))
            was.append(blob)
        batches.append({"to": new_id, "ids": ids, "sealed": sealed, "index": indexes, "was": was})
    del rows
    settle(engine)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        done = 0
        started = time.perf_counter()
        for batch in batches:
            cursor.execute(_UPDATE, batch)
            done += cursor.rowcount
            cursor.execute(
                _ROTATION_PROGRESS,
                {"updated": cursor.rowcount, "after": batch["ids"][-1], "id": rotation_id},
            )
            raw.commit()
        elapsed = time.perf_counter() - started
        cursor.close()
    finally:
        raw.close()
    return elapsed, done


def keys_rotation(
    server_url: str, template: str, users: int, env: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """The ``keys`` block: ``bnplctl keys rotate -o json`` timed as a subprocess (start-up
    and its whole run included) on a fresh copy of W(N) (``template``: bulk-loaded, its N
    users as imported) with a copy of the bench's key file (the rotation rewrites its key
    file; the run's own is never rotated), beside the writes it requires
    (``reference_rotation_writes``) on a second copy, so that both start from the same
    state. A rotation that does not re-encrypt every one of the ``users`` passports
    stops the bench: a timing of other work would mean nothing."""
    bnplctl = [sys.executable, "-m", "bnplctl"]
    key_file = Path(env["BNPL_SECRET_KEY_FILE"])
    with database_copy(server_url, template, f"{template}_keysref") as url:
        engine = create_engine(url)
        try:
            prepare_rotation_copy(engine)
            writes, written = reference_rotation_writes(engine, key_file)
        finally:
            engine.dispose()
    if written != users:
        raise SystemExit(f"bench: the rotation's reference wrote {written} rows, not {users}")
    with tempfile.TemporaryDirectory(prefix="keys-", dir=workdir) as scratch:
        own_key = Path(scratch) / "secret.key"
        own_key.write_bytes(key_file.read_bytes())
        own_key.chmod(0o600)
        with database_copy(server_url, template, f"{template}_keys") as url:
            copy_env = dict(env, BNPL_DATABASE_URL=url, BNPL_SECRET_KEY_FILE=str(own_key))
            engine = create_engine(url)
            try:
                prepare_rotation_copy(engine)
                settle(engine)
            finally:
                engine.dispose()
            rotated = measured([*bnplctl, "keys", "rotate", "-o", "json"], copy_env)
    summary = json.loads(rotated["stdout"]) if rotated["code"] == 0 else {}
    outcome = {
        "rows_total": summary.get("rows_total"),
        "rows_rotated": summary.get("rows_rotated"),
    }
    if outcome != {"rows_total": users, "rows_rotated": users}:
        raise SystemExit(
            f"bench: keys rotate exited {rotated['code']} with {outcome}, expected {users}"
            f" rows rotated of {users}: {rotated['stderr']}"
        )
    seconds = rotated["seconds"]
    figures: dict[str, Any] = {
        "users": users,
        "seconds": round(seconds, 3),
        "users_per_second": round(users / seconds),
        "peak_rss_mb": round(rotated["peak_kb"] / 1024, 1),
        "writes_reference_seconds": round(writes, 3),
        "writes_ratio": round(seconds / writes, 2),
    }
    figures["targets"] = {
        "users_per_second": figures["users_per_second"] >= KEYS_USERS_PER_S_TARGET,
        "peak_rss_mb": figures["peak_rss_mb"] <= KEYS_PEAK_RSS_MB_TARGET,
        "writes_ratio": figures["writes_ratio"] <= KEYS_WRITES_RATIO_TARGET,
    }
    return figures


def debt_show_latencies(url: str, users: int, samples: int = 1000) -> list[float]:
    os.environ["BNPL_DATABASE_URL"] = url
    from bnplctl.context import Context
    from bnplctl.services.debt import debt_of

    picker = random.Random(11)  # noqa: S311 - sampling, not security
    timings: list[float] = []
    context = Context()  # the settings of the environment above, as the CLI's root reads them
    with context.db.unit(readonly=True) as work:  # the connection `debt show` reads on
        connection = work.dbapi
        debt_of(connection, "u0000000", AS_OF)  # warm the connection
        for _ in range(samples):
            user_id = f"u{picker.randrange(users):07d}"
            started = time.perf_counter()
            debt_of(connection, user_id, AS_OF)
            timings.append(time.perf_counter() - started)
    context.close()
    return timings


def verify_timings(engine: Engine, runs: int = 3) -> tuple[float, float, bool]:
    """Median seconds of ``verify``'s checks and of a ``SELECT count(*)`` over each table
    they read, both on a warm connection; and whether the checks held."""
    from bnplctl.services.verify import run_checks

    checks, counts = [], []
    ok = True
    with engine.connect() as connection:
        for _ in range(runs):
            started = time.perf_counter()
            ok = all(result.violations == 0 for result in run_checks(connection))
            connection.rollback()
            checks.append(time.perf_counter() - started)
            started = time.perf_counter()
            for table in ("users", "plans", "installments", "refunds"):
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
            connection.rollback()
            counts.append(time.perf_counter() - started)
    return statistics.median(checks), statistics.median(counts), ok


def paired_medians(
    first: list[str], second: list[str], env: dict[str, str], runs: int = 11
) -> tuple[float, float]:
    """Median wall times of two commands run alternately, so that the machine's drift
    and its neighbours' load fall on both alike."""
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for command, into in ((first, timings[0]), (second, timings[1])):
            started = time.perf_counter()
            subprocess.run(command, env=env, capture_output=True, check=True)
            into.append(time.perf_counter() - started)
    return statistics.median(timings[0]), statistics.median(timings[1])


def interleaved_runs(
    commands: dict[str, list[str]], env: dict[str, str], runs: int = CLI_RUNS
) -> dict[str, tuple[float, list[str]]]:
    """Each command's median wall time over ``runs`` runs and its outputs (stdout), the
    commands taken in turn, round after round, so that the machine's drift and its
    neighbours' load fall on all alike. A command that fails stops the benchmark."""
    timings: dict[str, list[float]] = {name: [] for name in commands}
    outputs: dict[str, list[str]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            timings[name].append(time.perf_counter() - started)
            if done.returncode != 0:
                raise SystemExit(
                    f"bench: {' '.join(command[2:])} exited {done.returncode}: {done.stderr}"
                )
            outputs[name].append(done.stdout)
    return {name: (statistics.median(timings[name]), outputs[name]) for name in commands}


def cli_subjects(
    engine: Engine, users: int, bnplctl: list[str], env: dict[str, str]
) -> tuple[str, str]:
    """The users the timed commands read and write: one with overdue installments (for
    ``debt show`` and ``users show``, so that neither answers from an empty result), and
    one NORMAL (for ``plans create``, which refuses a DEBT_USER). Once swept, the workload
    leaves no NORMAL user at most N (at N = 2 000, 20 000 or 100 000, a user's plans start
    40 days apart in the 120-day cycle, so one of them is late): then one more user,
    without plans, is onboarded through the product (``users add``, untimed)."""
    with engine.connect() as connection:
        debtor = connection.execute(
            text(
                "SELECT user_id FROM installments WHERE status = 'OVERDUE'"
                " ORDER BY user_id <> :preferred, user_id LIMIT 1"
            ),
            {"preferred": DEBTOR},
        ).scalar()
        normal = connection.execute(
            text("SELECT user_id FROM users WHERE status = 'NORMAL' ORDER BY user_id LIMIT 1")
        ).scalar()
    if debtor is None:
        raise SystemExit("bench: no user has overdue installments after the sweep")
    if normal is None:
        row = dict(zip(USER_FIELDS, user_row(users), strict=True))
        options = [f"--{field.replace('_', '-')}={value}" for field, value in row.items()]
        subprocess.run(
            [*bnplctl, "users", "add", *options, "-o", "json"],
            env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        normal = row["user_id"]
    return debtor, normal


def check_created_plans(engine: Engine, outputs: list[str], user_id: str, amount: str) -> None:
    """Every ``plans create`` run made a plan of ``user_id``'s, as it printed."""
    ids = [json.loads(output)["id"] for output in outputs]
    with engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT count(*) FROM plans WHERE id = ANY(:ids) AND user_id = :user"
                " AND total_amount = CAST(:amount AS numeric)"
            ),
            {"ids": ids, "user": user_id, "amount": amount},
        ).scalar_one()
    if found != len(set(ids)) or len(set(ids)) != len(outputs):
        raise SystemExit(f"bench: plans create printed plans {ids}; {found} of them exist")


def cli_figures(help_s: float, typer_s: float, timed: dict[str, float]) -> dict[str, Any]:
    """The ``cli`` block: the figures, rounded, and whether each meets its target."""
    figures: dict[str, Any] = {
        "help_s": round(help_s, 3),
        "typer_import_s": round(typer_s, 3),
        "help_ratio": round(help_s / typer_s, 2),
    }
    figures |= {name: round(seconds, 3) for name, seconds in timed.items()}
    targets = {name: figures[name] <= limit for name, limit in CLI_TARGETS_S.items()}
    targets["help_ratio"] = figures["help_ratio"] <= HELP_RATIO_TARGET
    figures["targets"] = targets
    return figures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def byte_compile() -> None:
    """Byte-compile the package, as ``pip install`` does: with an editable install and
    PYTHONDONTWRITEBYTECODE set, every timed process would otherwise compile the sources
    again (``python -c "import typer"``, the ``--help`` reference, runs compiled code)."""
    import compileall

    import bnplctl

    compileall.compile_dir(Path(bnplctl.__file__).parent, quiet=1)


@contextmanager
def fresh_database(
    server_url: str, prefix: str, workdir: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A new database on the server, dropped at the end; yields its URL and the
    environment a ``bnplctl`` process needs to use it (data dir and key in ``workdir``)."""
    from bnplctl.db import normalize_url

    server = normalize_url(server_url)
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    env = dict(os.environ, BNPL_DATABASE_URL=url, BNPL_DATA_DIR=str(workdir))
    env["BNPL_SECRET_KEY_FILE"] = str(workdir / "secret.key")
    from bnplctl import crypto

    if crypto.read_key(workdir / "secret.key") is None:  # the operator's key, provided up front
        crypto.create_key(workdir / "secret.key")
    try:
        yield url, env
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(users: int, server_url: str, workdir: Path) -> dict[str, Any]:
    byte_compile()
    with fresh_database(server_url, "bnpl_bench", workdir) as (url, env):
        return measure(users, url, env, workdir, server_url)


def measure(
    users: int, url: str, env: dict[str, str], workdir: Path, server_url: str
) -> dict[str, Any]:
    """Build W(``users``) in the database at ``url`` (on the server at ``server_url``) and
    time every step."""
    engine = create_engine(url)
    bnplctl = [sys.executable, "-m", "bnplctl"]
    copies = ExitStack()
    try:
        # Start-up first, once the machine is quiet (no writes of an earlier run or of
        # another database still being flushed).
        settle(engine)
        help_s, typer_s = paired_medians(
            [*bnplctl, "--help"], [sys.executable, "-c", "import typer"], env
        )
        subprocess.run([*bnplctl, "db", "upgrade"], env=env, check=True, capture_output=True)
        no_autovacuum(engine)

        users_file = workdir / "users.csv"
        write_users(users_file, users)
        settle(engine)
        imported = measured([*bnplctl, "users", "import", str(users_file), "-o", "json"], env)
        created = json.loads(imported["stdout"])["created"]
        # The same number of rows, every one rejected: the report keeps the first 1,000,
        # the rest stream to --rejects, so the peak is the valid file's, not N rows'.
        minors_file = workdir / "minors.csv"
        write_users(minors_file, users, minors=True)
        refused = measured(
            [*bnplctl, "users", "import", str(minors_file), "-o", "json",
             "--rejects", str(workdir / "minors-rejects.csv")],
            env,
        )  # fmt: skip
        refused_summary = json.loads(refused["stdout"])

        # W(N) as bulk-loaded, before anything analyses it: the template of the copies
        # ``payments_statistics`` times the payments file on.
        bulk_setup(engine, users, analyse=False)
        engine.dispose()
        database = make_url(url).database
        unanalysed = f"{database}_w"
        copies.enter_context(database_copy(server_url, str(database), unanalysed))
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        cutoff = AS_OF
        sweep_reference = reference_sweep(engine, cutoff)
        settle(engine)
        swept = measured(
            [*bnplctl, "debt", "sweep", "--as-of", AS_OF.isoformat(), "-o", "json"], env
        )
        marked = json.loads(swept["stdout"])["installments_marked_overdue"]

        webhook_file = workdir / "webhooks.csv"
        webhook_rows = write_webhooks(webhook_file, users, users)
        ingest_reference = reference_ingest(engine, webhook_file)
        ingest_writes = reference_ingest_writes(engine, webhook_file)
        settle(engine)
        ingested = measured([*bnplctl, "webhooks", "ingest", str(webhook_file), "-o", "json"], env)

        payments_file = workdir / "payments.csv"
        payment_rows = write_payments(payments_file, users)
        payment_writes = reference_payment_writes(engine, payments_file)
        settle(engine)
        paid = measured([*bnplctl, "payments", "import", str(payments_file), "-o", "json"], env)
        paid_summary = json.loads(paid["stdout"])
        statistics_figures = payments_statistics(server_url, unanalysed, payments_file, env)

        # The processor's own settlement file, N rows, on a fresh copy of W(N).
        adyen_file = workdir / "adyen-settlement.csv"
        adyen_rows = write_adyen_settlement(adyen_file, users)
        preset_figures = payments_preset(server_url, unanalysed, adyen_file, adyen_rows, env)

        # Every passport re-encrypted under a new key, on fresh copies of W(N), with a copy
        # of the key file.
        keys_figures = keys_rotation(server_url, unanalysed, users, env, workdir)

        verify_s, count_s, verify_ok = verify_timings(engine)
        latencies = debt_show_latencies(url, users)

        # The commands at the terminal, last, on a quiet machine, as whole processes.
        debtor, normal = cli_subjects(engine, users, bnplctl, env)
        settle(engine)
        create_amount = "300.00"
        timed = interleaved_runs(
            {
                "plans_preview_s": [
                    *bnplctl, "plans", "preview", "--amount", "500.00", "--installments", "3",
                    "-o", "json",
                ],
                "users_show_s": [*bnplctl, "users", "show", debtor, "-o", "json"],
                "debt_show_s": [*bnplctl, "debt", "show", debtor, "-o", "json"],
                "plans_create_s": [
                    *bnplctl, "plans", "create", "--user", normal, "--amount", create_amount,
                    "--installments", "3", "-o", "json",
                ],
                "orm_floor_s": [sys.executable, "-c", ORM_FLOOR],
            },
            env,
        )  # fmt: skip
        if not json.loads(timed["debt_show_s"][1][0])["overdue_installments"]:
            raise SystemExit(f"bench: debt show {debtor} found no overdue installments")
        check_created_plans(engine, timed["plans_create_s"][1], normal, create_amount)
    finally:
        engine.dispose()
        copies.close()

    return {
        "users": users,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}",
        "date": date.today().isoformat(),
        "import_users": {
            "rows": created,
            "seconds": round(imported["seconds"], 3),
            "rows_per_s": round(created / imported["seconds"]),
            "peak_rss_mb": round(imported["peak_kb"] / 1024, 1),
        },
        "import_users_rejected": {
            "rows": refused_summary["invalid"],
            "rejected_listed": len(refused_summary["rejected"]),
            "seconds": round(refused["seconds"], 3),
            "peak_rss_mb": round(refused["peak_kb"] / 1024, 1),
        },
        "sweep": {
            "installments_marked_overdue": marked,
            "seconds": round(swept["seconds"], 3),
            "reference_seconds": round(sweep_reference, 3),
            "ratio": round(swept["seconds"] / sweep_reference, 2),
            "peak_rss_mb": round(swept["peak_kb"] / 1024, 1),
        },
        "ingest": {
            "rows": webhook_rows,
            "seconds": round(ingested["seconds"], 3),
            "reference_seconds": round(ingest_reference, 3),
            "ratio": round(ingested["seconds"] / ingest_reference, 2),
            "peak_rss_mb": round(ingested["peak_kb"] / 1024, 1),
            "writes_reference_seconds": round(ingest_writes, 3),
            "writes_ratio": round(ingested["seconds"] / ingest_writes, 2),
        },
        "payments": {
            "rows": payment_rows,
            "applied": paid_summary["applied"],
            "seconds": round(paid["seconds"], 3),
            "peak_rss_mb": round(paid["peak_kb"] / 1024, 1),
            "writes_reference_seconds": round(payment_writes, 3),
            "writes_ratio": round(paid["seconds"] / payment_writes, 2),
        },
        "payments_statistics": statistics_figures,
        "payments_preset": preset_figures,
        "keys": keys_figures,
        "verify": {
            "ok": verify_ok,
            "seconds": round(verify_s, 3),
            "count_seconds": round(count_s, 3),
            "ratio": round(verify_s / count_s, 2),
        },
        "debt_show": {
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        },
        "cli": cli_figures(help_s, typer_s, {name: median for name, (median, _) in timed.items()}),
    }


def soak_main(server_url: str, seconds: float) -> int:
    """``--soak``: the concurrency soak on a fresh database; 0 when every command ended with
    a documented code and ``verify`` is clean."""
    from bench.soak import Soak

    with tempfile.TemporaryDirectory(prefix="bnpl-soak-") as workdir:
        with fresh_database(server_url, "bnpl_soak", Path(workdir)) as (_, env):
            subprocess.run(
                [sys.executable, "-m", "bnplctl", "db", "upgrade"], env=env, check=True,
                capture_output=True,
            )  # fmt: skip
            report = Soak(env, Path(workdir)).soak(seconds)
    summary = {
        "seconds": seconds,
        "commands": dict(report.commands),
        "exit_codes": {str(code): count for code, count in sorted(report.codes.items())},
        "unexpected": report.unexpected,
        "verify": report.verify,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0 if report.ok else 1


def _figure(value: Any) -> str:
    if isinstance(value, dict):  # the targets: which are met
        verdicts = (f"{key} {'met' if met else 'MISSED'}" for key, met in value.items())
        return f"({', '.join(verdicts)})"
    return str(value)


def render_table(report: dict[str, Any]) -> str:
    lines = [f"bnplctl benchmark, N = {report['users']} ({report['machine']}, {report['date']})"]
    steps = ("import_users", "import_users_rejected", "sweep", "ingest", "payments",
             "payments_statistics", "payments_preset", "keys", "verify", "debt_show",
             "cli")  # fmt: skip
    for step in steps:
        figures = ", ".join(f"{key} {_figure(value)}" for key, value in report[step].items())
        lines.append(f"  {step:<13} {figures}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="N (default 100000)")
    parser.add_argument("-o", "--output", choices=("json", "table"), default="table")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead: run the concurrency soak (bench/soak.py) for SECONDS, then verify",
    )
    options = parser.parse_args(argv)
    url = os.environ.get("BNPL_DATABASE_URL")
    if not url:
        raise SystemExit(
            "bench: set BNPL_DATABASE_URL to a PostgreSQL server (the role needs CREATEDB)"
        )
    if options.soak is not None:
        sys.exit(soak_main(url, options.soak))
    if options.users < 10:
        raise SystemExit("bench: --users must be at least 10")
    with tempfile.TemporaryDirectory(prefix="bnpl-bench-") as workdir:
        report = run(options.users, url, Path(workdir))
    if options.output == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(report) + "\n")
