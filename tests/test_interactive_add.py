"""``users add`` at a real terminal: each value is checked as it is typed and asked again.

The command runs in a subprocess whose controlling terminal is a pseudo-terminal, as in
an operator's shell: the phone is read with echo, passport and card through ``getpass``
(no echo, on ``/dev/tty``), and Ctrl-D / Ctrl-C go through the terminal's line
discipline. Every read has a deadline, so a command that hangs fails the test.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Cli, row_counts

DEADLINE_SECONDS = 30.0  # per expected piece of output: a cold start plus a database round trip

# Test values only: the invalid ones fail one rule each; the cards are public test numbers.
PHONE_NO_PLUS, PHONE = "998901110001", "+998901234599"
PASSPORT_MIXED, PASSPORT = "A1B2C3D4", "ZZ0000001"
CARD_BAD_LUHN, CARD = "4111111111111112", "4012888888881881"
SECRETS = (PASSPORT_MIXED, PASSPORT, CARD_BAD_LUHN, CARD)

PHONE_REASON = "phone: must be in international format, starting with +"
PASSPORT_REASON = "passport: must be letters followed by digits"
CARD_REASON = "card: fails the Luhn check"


def _take_the_terminal() -> None:
    """In the child, after ``setsid``: standard input becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A ``bnplctl`` command on a pseudo-terminal of its own; what it shows is read with a
    deadline, and ``expect`` moves past each piece of output the test has looked at."""

    def __init__(self, *args: str) -> None:
        primary, secondary = os.openpty()
        env = dict(os.environ, NO_COLOR="1", TERM="dumb", COLUMNS="120")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bnplctl", *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env=env,
            start_new_session=True,
            preexec_fn=_take_the_terminal,
        )
        os.close(secondary)
        self.primary = primary
        self.output = ""
        self.looked_at = 0
        self.closed = False

    def _read(self, deadline: float) -> bool:
        """More output (False once the command has closed the terminal)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.primary], [], [], remaining)[0]:
            return True
        try:
            chunk = os.read(self.primary, 4096)
        except OSError:  # EIO: every holder of the secondary side has closed it
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.output += chunk.decode(errors="replace").replace("\r\n", "\n")
        return True

    def expect(self, wanted: str) -> str:
        """The output from where the test last looked up to and including ``wanted``."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (found := self.output.find(wanted, self.looked_at)) < 0:
            if self.closed or time.monotonic() >= deadline:
                raise AssertionError(f"{wanted!r} not shown; the terminal shows:\n{self.output}")
            self._read(deadline)
        piece = self.output[self.looked_at : found + len(wanted)]
        self.looked_at = found + len(wanted)
        return piece

    def type(self, keys: str) -> None:
        os.write(self.primary, keys.encode())

    def finish(self) -> tuple[int, str]:
        """The exit code and what was shown since the test last looked."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not self.closed and time.monotonic() < deadline:
            self._read(deadline)
        code = self.process.wait(timeout=max(deadline - time.monotonic(), 1))
        rest = self.output[self.looked_at :]
        self.looked_at = len(self.output)
        return code, rest

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_SECONDS)
        os.close(self.primary)


@pytest.fixture
def terminal(engine: Engine) -> Iterator[Callable[..., Terminal]]:
    """Starts commands on their own terminals, and stops and closes every one at the end."""
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(*args))
        return started[-1]

    yield start
    for each in started:
        each.close()


def _users(engine: Engine) -> list[tuple[str, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT user_id, phone_e164, card_brand, card_first6 || card_last4,"
                " passport_masked FROM users"
            )
        )
        return [tuple(row) for row in rows]


def test_each_typed_value_is_checked_at_once_and_asked_again(
    terminal: Callable[..., Terminal], engine: Engine, cli: Cli
) -> None:
    options = ["--user-id", "usr-tty", "--name", "Ann Lee", "--dob", "1990-01-01", "-o", "json"]
    add = terminal("users", "add", *options)

    assert add.expect("Phone: ") == "Phone: "
    add.type(PHONE_NO_PLUS + "\n")
    # The terminal echoes the phone as typed; the reason names the rule, not the number.
    assert add.expect("Phone: ") == f"{PHONE_NO_PLUS}\n{PHONE_REASON}\nPhone: "
    add.type(PHONE + "\n")
    assert add.expect("Passport: ") == f"{PHONE}\nPassport: "  # valid: the next question
    add.type(PASSPORT_MIXED + "\n")
    assert add.expect("Passport: ") == f"\n{PASSPORT_REASON}\nPassport: "  # no echo
    add.type(PASSPORT + "\n")
    assert add.expect("Card: ") == "\nCard: "
    add.type(CARD_BAD_LUHN + "\n")
    assert add.expect("Card: ") == f"\n{CARD_REASON}\nCard: "
    add.type(CARD + "\n")
    code, rest = add.finish()

    assert code == 0, add.output
    shown = json.loads(rest)  # nothing but the masked user after the last answer
    assert (shown["user_id"], shown["phone_number"]) == ("usr-tty", "+998****4599")
    assert (shown["passport_number"], shown["card_number"]) == ("ZZ*******", "4012 **** **** 1881")
    assert _users(engine) == [("usr-tty", PHONE, "visa", "401288" + "1881", "ZZ*******")]
    assert json.loads(cli("users", "show", "usr-tty", "-o", "json").stdout)["user_id"] == "usr-tty"
    for secret in SECRETS:
        assert secret not in add.output
    for phone in (PHONE_NO_PLUS, PHONE):  # only the terminal's echo of the typing
        assert add.output.count(phone.lstrip("+")) == 1


@pytest.mark.parametrize(("key", "code"), [("\x04", 2), ("\x03", 130)], ids=["ctrl-d", "ctrl-c"])
def test_ctrl_d_or_ctrl_c_at_the_second_question_writes_nothing(
    terminal: Callable[..., Terminal], engine: Engine, key: str, code: int
) -> None:
    add = terminal("users", "add", "--name", "Ann Lee", "--dob", "1990-01-01")
    add.expect("Phone: ")
    add.type(PHONE + "\n")
    add.expect("Passport: ")
    add.type(key)
    exit_code, rest = add.finish()

    assert exit_code == code, add.output
    errors = [line for line in rest.splitlines() if line.startswith("error: ")]
    if code == 2:
        assert errors == ["error: --passport: required (standard input ended before it was given)"]
    else:
        assert len(errors) == 1 and errors[0].startswith("error: interrupted")
    assert "Card: " not in rest
    assert set(row_counts(engine).values()) == {0}  # no user, no audit event, no key check


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--dob", "2015-06-01"], "dob: the user must be at least 18 years old"),
        (["--dob", "1990-01-01", "--card", CARD_BAD_LUHN], CARD_REASON),
    ],
    ids=["too-young", "bad-card-option"],
)
def test_an_invalid_option_is_reported_before_any_question(
    terminal: Callable[..., Terminal], engine: Engine, options: list[str], reason: str
) -> None:
    add = terminal("users", "add", "--name", "Ann Lee", *options)
    code, rest = add.finish()

    if options[0:2] == ["--dob", "2015-06-01"]:  # a malformed option: a usage error
        option, _, why = reason.partition(": ")
        assert code == 2
        assert f"Error: Invalid value for '--{option}': {why}" in rest
        assert "Phone: " not in rest
    else:
        assert (code, rest) == (65, f"error: {reason}\n")  # no "Phone: " asked first
    assert row_counts(engine)["users"] == 0


def test_piped_values_are_still_checked_together_and_not_asked_again(
    cli: Cli, engine: Engine
) -> None:
    # Not a terminal: the first invalid line fails the command; the next lines are not
    # taken as a second try.
    piped = f"{PHONE}\n{PASSPORT_MIXED}\n{CARD}\n{PASSPORT}\n{CARD}\n"
    result = cli("users", "add", "--name", "Ann Lee", "--dob", "1990-01-01", input=piped)

    assert (result.exit_code, result.stderr) == (65, f"error: {PASSPORT_REASON}\n")
    assert result.stdout == ""
    assert row_counts(engine)["users"] == 0


def test_no_secret_is_asked_for_when_there_is_no_key_to_keep_it(
    terminal: Callable[..., Terminal], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database URL without BNPL_SECRET_KEY_FILE: exit 78 before the first question."""
    monkeypatch.delenv("BNPL_SECRET_KEY_FILE")
    add = terminal("users", "add", "--name", "Ann Lee", "--dob", "1990-01-01")
    code, rest = add.finish()
    assert code == 78
    assert rest.startswith("error: BNPL_SECRET_KEY_FILE is not set")
    assert "Phone: " not in rest and "Passport: " not in rest
    assert row_counts(engine)["users"] == 0
