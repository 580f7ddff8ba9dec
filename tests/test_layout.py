"""The layering the design rests on (docs/design.md), checked on the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bnplctl"
SERVICES = sorted((PACKAGE / "services").glob("*.py"))


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", SERVICES, ids=lambda path: path.name)
def test_services_import_neither_the_batch_files_nor_the_cli(path: Path) -> None:
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    outside = {
        name
        for name in imported
        if name.startswith(("bnplctl.importing", "bnplctl.cli", "bnplctl.rows"))
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


# Every module but db.py, where the one unit-of-work API lives (``unit``, ``units``,
# ``savepoint``, ``Unit``).
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "db.py")
_TRANSACTION_CALLS = {"begin", "commit", "rollback", "begin_nested", "connect", "Session"}
_TRANSACTION_SQL = re.compile(
    r"(?:^|;)\s*(SAVEPOINT|ROLLBACK|COMMIT|BEGIN|RELEASE|START\s+TRANSACTION|END)\b"
)
_GONE = {"session_scope", "connection_scope", "read_scope", "chunk_transactions"}


def transaction_idioms(source: str) -> list[str]:
    """Every way ``source`` could own a transaction without ``db.unit``/``db.units``: a
    begin, commit, rollback, savepoint or connect call, an ORM ``Session`` made by hand,
    transaction control in SQL text, or one of the retired scopes."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _TRANSACTION_CALLS:
                found.append(f"line {node.lineno}: {name}()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _TRANSACTION_SQL.search(node.value):
                found.append(f"line {node.lineno}: SQL {node.value.strip()[:40]!r}")
        elif isinstance(node, ast.ImportFrom) and node.module == "bnplctl.db":
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name in _GONE]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_the_unit_of_work_owns_a_transaction(path: Path) -> None:
    """One unit of work (issue 25): every command, job and batch path opens its
    transactions with ``Database.unit()`` or ``Database.units()`` and undoes part of one
    only with ``Unit.savepoint``; nothing else begins, commits, rolls back or connects."""
    assert not transaction_idioms(path.read_text(encoding="utf-8")), path.name


@pytest.mark.parametrize(
    "snippet",
    [
        "connection.commit()",
        "with engine.begin() as c: pass",
        "conn.begin_nested()",
        "session.rollback()",
        "engine.connect()",
        "Session(engine)",
        "cursor.execute('SAVEPOINT s')",
        "cursor.execute('SELECT 1; COMMIT')",
        "from bnplctl.db import session_scope",
    ],
)
def test_the_transaction_rule_sees_every_idiom(snippet: str) -> None:
    assert transaction_idioms(snippet)


def test_the_transaction_rule_leaves_prose_and_units_alone() -> None:
    source = (
        '"""Each chunk commits; a rollback undoes it."""\n'
        "from bnplctl.db import savepoint, unit\n"
        "with unit() as work, savepoint(work.connection):\n"
        "    work.connection.execute(text('SELECT 1'))\n"
    )
    assert transaction_idioms(source) == []


def test_the_batch_fast_path_loads_neither_pydantic_nor_the_orm() -> None:
    """Import workers start at once: the validators and onboarding's writes stay free of
    pydantic, SQLAlchemy's ORM and the models."""
    for name in ("validators.py", "services/onboarding.py", "importing/users.py"):
        imported = _imported_modules(ast.parse((PACKAGE / name).read_text(encoding="utf-8")))
        heavy = {
            module
            for module in imported
            if module.startswith(("pydantic", "sqlmodel", "sqlalchemy.orm", "bnplctl.models"))
        }
        assert not heavy, f"{name} imports {sorted(heavy)}"


# Rule 10's decisions have one home (issue 25): whether a payment is one recorded before
# (duplicate, conflict), whether anything is due where it goes (overpayment, an
# installment already PAID) and where it goes are decided by the statements of
# ``services/payments.py``, for a file's rows and a command's payments alike. Nothing else
# looks a payment up by its reference, and the channels' own modules compare neither
# what is due nor whether an installment is PAID: they stage payments and tell the outcome.
RULE_10_HOME = PACKAGE / "services" / "payments.py"
RULE_10_CHANNELS = ("services/installments.py", "cli/installments.py", "importing/payments.py")
_BY_REFERENCE_SQL = re.compile(
    r"\b(?:FROM|JOIN)\s+payments\b(?![.\w])(?:(?!;).)*?\breference\s*(?:=|<>|!=|IN\b|IS\b)",
    re.IGNORECASE | re.DOTALL,
)


def _payment_reference(node: ast.AST) -> bool:
    """``Payment.reference``, ``col(Payment.reference)`` or a Core table's ``.c.reference``
    (only payments have a ``reference`` column)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "col" and node.args:
        node = node.args[0]
    if not (isinstance(node, ast.Attribute) and node.attr == "reference"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Name) and owner.id == "Payment") or (
        isinstance(owner, ast.Attribute) and owner.attr == "c"
    )


def payment_lookups_by_reference(source: str) -> list[str]:
    """Every way ``source`` could find a payment by its reference: SQL text that reads
    ``payments`` and filters or joins on ``reference``, or an ORM/Core comparison of it."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _BY_REFERENCE_SQL.search(node.value):
                found.append(f"line {node.lineno}: SQL {node.value.strip()[:50]!r}")
        elif isinstance(node, ast.Compare):
            if any(_payment_reference(operand) for operand in (node.left, *node.comparators)):
                found.append(f"line {node.lineno}: a comparison of a payment's reference")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"in_", "is_", "like", "ilike"} and _payment_reference(
                node.func.value
            ):
                found.append(f"line {node.lineno}: {node.func.attr}() on a payment's reference")
    return found


@pytest.mark.parametrize(
    "path",
    [path for path in MODULES if path != RULE_10_HOME],
    ids=lambda path: str(path.relative_to(PACKAGE)),
)
def test_only_rule_10s_statements_look_a_payment_up_by_its_reference(path: Path) -> None:
    assert not payment_lookups_by_reference(path.read_text(encoding="utf-8")), path.name


@pytest.mark.parametrize(
    "snippet",
    [
        'text("SELECT id, amount FROM payments WHERE reference = :reference")',
        '"SELECT 1 FROM payments p\\n WHERE p.amount > 0 AND p.reference IN (:a, :b)"',
        '"UPDATE m SET outcome = 1 FROM moves m JOIN payments p ON p.reference = m.reference"',
        "select(Payment).where(Payment.reference == reference)",
        "session.exec(select(Payment).where(col(Payment.reference) == wanted))",
        "select(Payment).where(col(Payment.reference).in_(references))",
        "select(payments.c.id).where(payments.c.reference == reference)",
    ],
)
def test_the_reference_rule_sees_every_lookup(snippet: str) -> None:
    assert payment_lookups_by_reference(snippet)


def test_the_reference_rule_leaves_other_reads_alone() -> None:
    source = (
        '"""A payment is found by its reference in rule 10\'s statement."""\n'
        'text("SELECT reference, amount FROM payments WHERE id = ANY(:ids) ORDER BY reference")\n'
        'text("SELECT id FROM plans WHERE merchant_reference = :reference")\n'
        "select(Payment).order_by(col(Payment.reference))\n"
        "payment_with_reference(session, DEMO_PAYMENT)\n"
    )
    assert payment_lookups_by_reference(source) == []


def rule_10_decisions(source: str) -> list[str]:
    """Every comparison in ``source`` of what is due (``amount_due``) or of a status with
    PAID (``InstallmentStatus.PAID``, ``'PAID'``): rule 10 decided in Python."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in ast.walk(node):
            name = getattr(operand, "attr", None) or getattr(operand, "id", None)
            value = operand.value if isinstance(operand, ast.Constant) else None
            if name in {"amount_due", "PAID"} or value == "PAID":
                found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
                break
    return found


@pytest.mark.parametrize("name", RULE_10_CHANNELS)
def test_the_channels_of_rule_10_decide_nothing_of_it(name: str) -> None:
    assert not rule_10_decisions((PACKAGE / name).read_text(encoding="utf-8")), name


@pytest.mark.parametrize(
    "snippet",
    [
        "if amount > installment.amount_due: raise Refused('overpayment')",
        "paid = [i.id for i in current if i.status == InstallmentStatus.PAID.value]",
        "if row.status == 'PAID': return earlier",
        "same = amount == row.amount and installment.amount_due == 0",
    ],
)
def test_the_decision_rule_sees_every_comparison(snippet: str) -> None:
    assert rule_10_decisions(snippet)


# --- one injected context (issue 25, item 3) ------------------------------------------

ALL_MODULES = sorted(PACKAGE.rglob("*.py"))
# The composition root: the one place the settings are read (``Context.settings``).
SETTINGS_READERS = {PACKAGE / "context.py"}
# The renderer and the root: the places that touch the process's standard streams.
STREAM_OWNERS = {
    PACKAGE / "context.py",  # the root's default: the process's streams
    PACKAGE / "cli" / "app.py",  # the error boundary's traceback and the exit's flush
    PACKAGE / "cli" / "output.py",  # the renderer
    PACKAGE / "cli" / "streams.py",  # the renderer's streams: encodings, a reader gone
}
_SETTINGS_CALLS = {"get_settings", "load_settings", "Settings"}


def _called_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def context_breaches(source: str, *, reads_settings: bool, owns_streams: bool) -> list[str]:
    """Where ``source`` reaches past the injected context: it reads the settings itself,
    touches ``sys.stdout``/``sys.stderr``, or keeps state of the process in a module
    (a ``global`` rebinding, a ``ContextVar``, an attribute a function sets on a
    module-level object made by a call, as ``STATE.actor = ...`` was)."""
    tree = ast.parse(source)
    made_at_module_level = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    in_functions = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name in _SETTINGS_CALLS and not reads_settings:
                found.append(f"line {node.lineno}: {name}()")
            elif name == "ContextVar":
                found.append(f"line {node.lineno}: ContextVar()")
        elif isinstance(node, ast.Attribute) and not owns_streams:
            if getattr(node.value, "id", "") == "sys" and node.attr in ("stdout", "stderr"):
                found.append(f"line {node.lineno}: sys.{node.attr}")
        elif isinstance(node, ast.Global):
            found.append(f"line {node.lineno}: global {', '.join(node.names)}")
        elif isinstance(node, ast.Assign | ast.AugAssign) and id(node) in in_functions:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and getattr(target.value, "id", "") in made_at_module_level
                ):
                    found.append(f"line {node.lineno}: {target.value.id}.{target.attr} =")  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_nothing_below_the_root_reads_settings_streams_or_module_state(path: Path) -> None:
    """One injected context (issue 25): the settings are read at the composition root
    only, output goes through the renderer only, and no module keeps the process's state
    (the engine, the actor, a dry run's connection) in a global: each arrives with the
    ``Context`` the CLI's root built, or as a parameter."""
    breaches = context_breaches(
        path.read_text(encoding="utf-8"),
        reads_settings=path in SETTINGS_READERS,
        owns_streams=path in STREAM_OWNERS,
    )
    assert not breaches, f"{path.relative_to(PACKAGE)}: {breaches}"


@pytest.mark.parametrize(
    "snippet",
    [
        "from bnplctl.config import get_settings\nget_settings().timezone",
        "settings = Settings()",
        "config.load_settings()",
        "sys.stdout.write('x')",
        "print('x', file=sys.stderr)",
        "def f():\n    global _engine\n    _engine = None",
        "_DRY = ContextVar('dry')",
        "STATE = CliState()\ndef f():\n    STATE.actor = 'me'",
        "COUNT = Counter()\ndef f():\n    COUNT.n += 1",
    ],
)
def test_the_context_rule_sees_every_breach(snippet: str) -> None:
    assert context_breaches(snippet, reads_settings=False, owns_streams=False)


def test_the_context_rule_leaves_injected_parts_alone() -> None:
    source = (
        "from bnplctl.cli.context import app_context\n"
        "LOGGER = logging.getLogger('x')\n"
        "def f(context):\n"
        "    context.settings.timezone, context.db.unit(), context.out.write('x')\n"
        "    self.path = context.settings.data_dir\n"
    )
    assert context_breaches(source, reads_settings=False, owns_streams=False) == []


TESTS = sorted(Path(__file__).resolve().parent.glob("*.py"))
_PATCHED_CONSTANT = re.compile(r"setattr\([^,]+,\s*['\"](CHUNK_ROWS|stdout|stderr)['\"]")


@pytest.mark.parametrize("path", TESTS, ids=lambda path: path.name)
def test_tests_build_a_context_instead_of_patching_module_state(path: Path) -> None:
    """A test that wants small chunks or its own streams gives the CLI a ``Context``
    (``cli.chunks(webhooks=3)``, ``Context(stdout=...)``), never patches a module's
    constant or ``sys.stdout``."""
    if path.name == "test_layout.py":
        return
    assert not _PATCHED_CONSTANT.findall(path.read_text(encoding="utf-8")), path.name
