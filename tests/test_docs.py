"""docs/commands.md held to the CLI itself (CONVENTIONS.md, rule 19): every command of the
Typer tree (the root commands and every group of ``LAZY_GROUPS``), each of its arguments,
options, choices and sort fields, documented in the reference section; nothing
documented that does not exist; every example in the docs names real commands and
options. A failure says exactly what to add or remove, as the markdown to write."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import command_tree

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMANDS_MD = DOCS / "commands.md"
REFERENCE_HEADING = "## Reference"
_HEADING = re.compile(r"^### `bnplctl(?P<usage>[^`]*)`\s*$", re.MULTILINE)
_OPTION_LINE = re.compile(r"^- `(?P<spec>-[^`]+)`", re.MULTILINE)
_SORT_FIELDS = re.compile(r"Order by (?P<fields>[^;]+); -FIELD for descending")


@dataclass
class Documented:
    """One command's entry in the reference: its usage line, options (long name ->
    the value shown, None for a flag; all its names), and the rest of its text."""

    arguments: list[str]
    options: dict[str, str | None] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)
    text: str = ""


def _reference() -> dict[str, Documented]:
    """The reference section of docs/commands.md, by command path (``""``: the root)."""
    text = COMMANDS_MD.read_text(encoding="utf-8")
    assert f"\n{REFERENCE_HEADING}\n" in text, f"docs/commands.md has no '{REFERENCE_HEADING}'"
    section = text.split(f"\n{REFERENCE_HEADING}\n", 1)[1].split("\n## ", 1)[0]
    headings = list(_HEADING.finditer(section))
    found: dict[str, Documented] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        block = section[heading.end() : following.start() if following else len(section)]
        words = heading.group("usage").split()
        path = " ".join(word for word in words if re.fullmatch(r"[a-z][a-z-]*", word))
        arguments = [word for word in words if not re.fullmatch(r"[a-z][a-z-]*", word)]
        entry = Documented(arguments=arguments, text=block)
        for line in _OPTION_LINE.finditer(block):
            spec = line.group("spec").split(" ", 1)
            names = spec[0].split("/")
            long_name = max(names, key=len)
            entry.options[long_name] = spec[1] if len(spec) > 1 else None
            entry.names[long_name] = names
            entry.lines[long_name] = block[line.start() : block.index("\n", line.start())]
        assert path not in found, f"docs/commands.md: '### `bnplctl {path}`' appears twice"
        found[path] = entry
    return found


def _commands() -> dict[str, Any]:
    """Every command of the CLI by path, the root group (its own options) as ``""``."""
    import typer

    from bnplctl.cli.app import app

    return {"": typer.main.get_command(app), **command_tree()}


def _shown_value(param: Any) -> str | None:
    """What the reference writes after an option's names: its choices joined by ``|``,
    else its metavar (as --help shows it); None for a flag."""
    if param.is_flag:
        return None
    choices = getattr(param.type, "choices", None)
    if choices:
        return "|".join(str(choice) for choice in choices)
    return str(param.metavar)


def _options(command: Any) -> dict[str, Any]:
    """A command's options as its help shows them: hidden ones (the root's ``--actor``,
    also taken after the command) are documented with the root's."""
    return {
        max(param.opts, key=len): param
        for param in command.params
        if param.param_type_name == "option" and not getattr(param, "hidden", False)
    }


def _arguments(command: Any) -> list[str]:
    return [
        param.make_metavar(None) for param in command.params if param.param_type_name == "argument"
    ]


def _option_line(param: Any) -> str:
    names = "/".join(sorted(param.opts, key=len))
    value = _shown_value(param)
    spec = names if value is None else f"{names} {value}"
    return f"- `{spec}` — {(param.help or '').strip()}"


def _entry(path: str, command: Any) -> str:
    """The markdown of a command's entry, for a failure message to quote."""
    usage = " ".join(["bnplctl", *([path] if path else []), *_arguments(command)])
    help_line = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
    options = [_option_line(param) for param in _options(command).values()]
    return "\n".join([f"### `{usage}`", "", help_line, "", *options])


def test_every_command_is_documented_and_nothing_else() -> None:
    commands, documented = _commands(), _reference()
    missing = [
        f"add to {COMMANDS_MD.name}, under '{REFERENCE_HEADING}':\n\n{_entry(path, command)}\n"
        for path, command in commands.items()
        if path not in documented
    ]
    extra = [
        f"'### `bnplctl {path}`' is documented, but there is no such command: remove it"
        for path in documented
        if path not in commands
    ]
    assert not missing + extra, "\n".join(missing + extra)


def test_every_option_and_choice_is_documented_and_nothing_else() -> None:
    commands, documented = _commands(), _reference()
    problems: list[str] = []
    for path, command in commands.items():
        entry = documented.get(path)
        if entry is None:
            continue  # the test above says so
        where = f"bnplctl {path}".strip()
        if entry.arguments != _arguments(command):
            problems.append(
                f"{where}: arguments documented {entry.arguments}, the CLI takes"
                f" {_arguments(command)}"
            )
        options = _options(command)
        for name, param in options.items():
            if name not in entry.options:
                problems.append(
                    f"{where}: option {name} is not documented; add:\n{_option_line(param)}"
                )
                continue
            if sorted(entry.names[name]) != sorted(param.opts):
                problems.append(
                    f"{where}: {name} is spelt {entry.names[name]}, the CLI {param.opts}"
                )
            if entry.options[name] != _shown_value(param):
                problems.append(
                    f"{where}: {name} documented as taking {entry.options[name]!r}, the CLI"
                    f" shows {_shown_value(param)!r} (its choices, or what its value is)"
                )
            fields = _SORT_FIELDS.search(param.help or "")
            if fields:
                wanted = [name.strip() for name in fields.group("fields").split(",")]
                shown = re.findall(r"`([a-z_]+)`", entry.lines[name].split("FIELD:", 1)[-1])
                if shown != wanted:
                    problems.append(
                        f"{where}: --sort fields documented {shown}, the CLI sorts by {wanted}"
                    )
        for name in entry.options:
            if name not in options:
                problems.append(
                    f"{where}: {name} is documented, but the command has no such option"
                )
    assert not problems, "\n".join(problems)


def test_the_checks_of_verify_are_the_ones_it_runs() -> None:
    from bnplctl.services.verify import CHECKS

    entry = _reference()["verify"]
    line = next((line for line in entry.text.splitlines() if line.startswith("Checks:")), "")
    documented = re.findall(r"`([a-z_]+)`", line)
    assert documented == list(CHECKS), (
        f"'### `bnplctl verify`': write 'Checks: {', '.join(f'`{c}`' for c in CHECKS)}'"
        f" (documented: {documented})"
    )


def _examples(path: Path) -> list[str]:
    """The bnplctl command lines of a page's ``bash`` blocks (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        for part in line.split("|"):
            part = part.split(" #", 1)[0].strip()
            part = part.split("<", 1)[0].split(">", 1)[0].strip()
            if part.startswith("bnplctl "):
                found.append(part)
    return found


@pytest.mark.parametrize("page", [COMMANDS_MD, DOCS.parent / "README.md"], ids=lambda p: p.name)
def test_every_example_names_real_commands_and_options(page: Path) -> None:
    commands = _commands()
    root_options = {name for param in commands[""].params for name in param.opts}
    groups = {name.split(" ")[0] for name in commands if " " in name}
    problems = []
    for example in _examples(page):
        words = shlex.split(example)[1:]
        while words and words[0] in root_options:  # --actor NAME, --debug before the command
            words = words[2:] if words[0] == "--actor" else words[1:]
        path: list[str] = []
        while words and (
            " ".join([*path, words[0]]) in commands or (not path and words[0] in groups)
        ):
            path.append(words.pop(0))
        command = commands.get(" ".join(path))
        if command is None or not path:
            problems.append(f"{page.name}: {example!r}: no such command")
            continue
        params = {name: param for param in command.params for name in param.opts}
        takes_value = False
        for word in words:
            if takes_value:
                takes_value = False
                continue
            name = word.split("=", 1)[0]
            if not word.startswith("-") or word == "-":
                continue
            if name in ("-h", "--help"):
                continue
            if name not in params:
                problems.append(f"{page.name}: {example!r}: {name} is not an option of it")
                continue
            takes_value = "=" not in word and not params[name].is_flag
    assert not problems, "\n".join(problems)
