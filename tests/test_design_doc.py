"""docs/design.md held to the code (CONVENTIONS.md, rule 19): the rules' homes, the units
of work and the lock protocol name only modules that exist and only what those modules
define, spelled as in the code. The page says how it is read, above its rules table:

- every path in backticks (``services/plans.py``; ``bnplctl/``, ``tests/`` and ``bench/``
  from the repository's root, any other under ``bnplctl/``) exists;
- a path followed by a parenthesis that opens with names in backticks
  (``services/plans.py`` (``create_plan``, …)) names what the module defines at its top
  level: a ``def``, a class or an assignment;
- a dotted name is an audit action the code writes (``'user.status_changed'`` quoted in
  ``bnplctl/``) or ``module.name``: ``name`` defined in ``bnplctl/module.py``, else in
  ``bnplctl/services/module.py`` (``importing/batch.apply_chunks``: a path under
  ``bnplctl/``); a trailing ``()`` is dropped.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bnplctl"
DESIGN_MD = ROOT / "docs" / "design.md"
FIRST_HEADING = "## The rules and their homes"
LAST_HEADING = "## Development"  # not held: the layout's prose
LOCKS_HEADING = "## The lock protocol"
_FROM_ROOT = ("bnplctl/", "tests/", "bench/")

_DOUBLE_TICKS = re.compile(r"``.*?``", re.DOTALL)  # code that shows backticks: an example
_CODE = re.compile(r"`([^`]+)`")  # a span may go over a line break
_PATH = re.compile(r"[\w./-]+\.py")
_HOME = re.compile(r"`(?P<path>[\w./-]+\.py)`\s+\((?P<names>`\w+`(?:,\s+`\w+`)*)")
_DOTTED = re.compile(r"(?P<module>[A-Za-z_]\w*(?:/[A-Za-z_]\w*)*)\.(?P<name>[A-Za-z_]\w*)(?:\(\))?")


@dataclass(frozen=True)
class Claim:
    """What the page says exists: a path, a name in a module, or a dotted name."""

    written: str  # as the page has it
    path: str | None = None
    name: str | None = None


def held_text(page: str) -> str:
    """The part of the page the code holds, code examples that show backticks left out."""
    assert FIRST_HEADING in page and LAST_HEADING in page, "design.md lost a heading"
    held = page[page.index(FIRST_HEADING) : page.index(LAST_HEADING)]
    return _DOUBLE_TICKS.sub("", held)


def claims(page: str) -> list[Claim]:
    text = held_text(page)
    found = [Claim(f"`{code}`", path=code) for code in _CODE.findall(text) if _PATH.fullmatch(code)]
    for home in _HOME.finditer(text):
        found += [
            Claim(f"`{home['path']}` (`{name}`)", path=home["path"], name=name)
            for name in re.findall(r"`(\w+)`", home["names"])
        ]
    found += [
        Claim(f"`{code}`")
        for code in _CODE.findall(text)
        if _DOTTED.fullmatch(code) and not _PATH.fullmatch(code)
    ]
    return found


def _file(path: str, package: Path) -> Path:
    if path.startswith("bnplctl/"):
        return package / path.removeprefix("bnplctl/")
    return ROOT / path if path.startswith(_FROM_ROOT) else package / path


def _defined(module: Path) -> frozenset[str]:
    """The names ``module`` defines at its top level."""
    names: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def _audit_actions(package: Path) -> set[str]:
    """Every quoted ``entity.action`` in the code: the audit actions it writes, among others."""
    quoted = re.compile(r"""['"]([a-z_]+\.[a-z_]+)['"]""")
    return {
        action
        for module in package.rglob("*.py")
        for action in quoted.findall(module.read_text(encoding="utf-8"))
    }


def _module_of(dotted: str, package: Path) -> Path | None:
    if "/" in dotted:
        candidates = [package / f"{dotted}.py"]
    else:
        candidates = [package / f"{dotted}.py", package / "services" / f"{dotted}.py"]
    return next((module for module in candidates if module.is_file()), None)


def _problem(claim: Claim, package: Path, actions: set[str]) -> str | None:
    if claim.path is None:
        return _dotted_problem(claim.written, package, actions)
    module = _file(claim.path, package)
    if not module.is_file():
        return f"{claim.written}: there is no {claim.path}"
    if claim.name is not None and claim.name not in _defined(module):
        return f"{claim.written}: {claim.path} defines no `{claim.name}`"
    return None


def _dotted_problem(written: str, package: Path, actions: set[str]) -> str | None:
    match = _DOTTED.fullmatch(written.strip("`"))
    assert match is not None
    if f"{match['module']}.{match['name']}" in actions:
        return None
    module = _module_of(match["module"], package)
    if module is None:
        return f"{written}: neither an audit action nor a module's ({match['module']})"
    if match["name"] not in _defined(module):
        return f"{written}: {module.relative_to(package.parent)} defines no `{match['name']}`"
    return None


def problems(page: str, package: Path = PACKAGE) -> list[str]:
    """What the page names that the code (``package``) does not have, one line each."""
    actions = _audit_actions(package)
    found = (_problem(claim, package, actions) for claim in claims(page))
    return sorted({problem for problem in found if problem is not None})


def _page() -> str:
    return DESIGN_MD.read_text(encoding="utf-8")


def test_the_design_doc_names_only_what_the_code_has() -> None:
    assert problems(_page()) == []


def test_every_rule_has_a_home_that_is_checked() -> None:
    """The rules table is read: rules 1 to 12 each name at least one home module."""
    rows = [line for line in held_text(_page()).splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, 13))
    for row in rows:
        assert _PATH.search(row), f"design.md: no home module in {row!r}"


def test_the_lock_protocol_names_every_lock_in_services_locks() -> None:
    """Every public function of services/locks.py is named in "The lock protocol" (as
    ``locks.NAME``): a new way to lock goes into the protocol, with its proof."""
    page = _page()
    section = page[page.index(LOCKS_HEADING) : page.index(LAST_HEADING)]
    named = set(re.findall(r"`locks\.(\w+)`", section))
    functions = {
        node.name
        for node in ast.parse((PACKAGE / "services" / "locks.py").read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    assert functions, "services/locks.py has no lock functions left?"
    assert functions <= named, f"not in design.md's lock protocol: {sorted(functions - named)}"


@pytest.mark.parametrize(
    ("written", "doctored", "problem"),
    [
        ("`create_plan`", "`create_a_plan`", "services/plans.py defines no `create_a_plan`"),
        ("`services/settlement.py`", "`services/debt_status.py`", "no services/debt_status.py"),
        ("(`_MOVE`)", "(`MOVE`)", "services/refund_states.py defines no `MOVE`"),
        ("`USER_STATUS_CHANGED`", "`USER_STATUS`", "defines no `USER_STATUS`"),
        ("`jobs.revert_job`", "`jobs.undo_job`", "bnplctl/jobs.py defines no `undo_job`"),
        ("`locks.for_sweep`", "`locks.for_the_sweep`", "defines no `for_the_sweep`"),
        ("`importing/batch.apply_chunks`", "`importing/files.apply_chunks`", "(importing/files)"),
        ("`webhooks.ingested`", "`webhooks.imported`", "neither an audit action"),
    ],
)
def test_a_doctored_design_doc_fails(written: str, doctored: str, problem: str) -> None:
    """The check on the page with a name or a path changed throughout: it names the change."""
    page = _page()
    assert written in held_text(page)
    found = problems(page.replace(written, doctored))
    assert any(problem in line for line in found), found


def test_the_design_doc_fails_on_doctored_code(tmp_path: Path) -> None:
    """The check on a copy of the code with a module renamed and names taken away."""
    package = tmp_path / "bnplctl"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    assert problems(_page(), package) == []  # the copy, as it is
    (package / "services" / "settlement.py").rename(package / "services" / "debt_status.py")
    jobs = package / "jobs.py"
    jobs.write_text(jobs.read_text().replace("def revert_job(", "def undo_job("))
    locks = package / "services" / "locks.py"
    locks.write_text(locks.read_text().replace("def for_reference(", "def reference_lock("))
    found = problems(_page(), package)
    for problem in (
        "there is no services/settlement.py",
        "bnplctl/jobs.py defines no `revert_job`",
        "services/locks.py defines no `for_reference`",
    ):
        assert any(problem in line for line in found), (problem, found)
