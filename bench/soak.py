"""The concurrency soak: several writers at once, every command's exit code checked, then
rule 9 checked by ``bnplctl verify``.

Worker threads each run real ``bnplctl`` processes in a loop, picking at random: the
overdue sweep for one of several business dates, payments (some with a reference),
their reversals (rule 12: some partial, some repeated, some of more than is left),
refund creation and moves, webhook files (with approvals that pay installments off),
plan creation and user imports. Every command must end with a documented exit code
(0, 3 refused, 4 not found, 5 batch rows rejected, 75 another sweep holds the lock); at
the end ``verify`` must be clean. ``tests/test_integrity.py`` runs it for a few
seconds; ``python -m bench --soak SECONDS`` for longer.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from bench.run import luhn_complete

ALLOWED = {0, 3, 4, 5, 75}
TODAY = date(2026, 6, 1)


@dataclass
class SoakReport:
    commands: Counter[str] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    verify: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unexpected and bool(self.verify.get("ok"))


def _users_file(path: Path, first: int, count: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "name", "phone", "passport", "card", "dob"])
        for n in range(first, first + count):
            writer.writerow(
                [
                    f"s{n:06d}",
                    f"Soak User {n}",
                    f"+99891{n:07d}",
                    f"SK{n:07d}",
                    luhn_complete(f"5{n:014d}"),
                    "1980-01-01",
                ]
            )


ACTIONS = ("sweep", "pay", "reverse", "refund", "move", "webhook", "plan", "import")


class Soak:
    def __init__(self, env: dict[str, str], workdir: Path, users: int = 12) -> None:
        self.env = env
        self.workdir = workdir
        self.users = users
        self.report = SoakReport()
        self.lock = threading.Lock()
        self.next_user = users
        self.next_refund = 0
        self.next_payment = 0
        self.next_reversal = 0

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bnplctl", "--actor", "soak", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def _record(self, name: str, done: subprocess.CompletedProcess[str]) -> None:
        with self.lock:
            self.report.commands[name] += 1
            self.report.codes[done.returncode] += 1
            if done.returncode not in ALLOWED:
                self.report.unexpected.append(
                    f"{name}: exit {done.returncode}: {done.stderr.strip()[-300:]}"
                )

    def seed(self) -> None:
        users = self.workdir / "soak-users.csv"
        _users_file(users, 0, self.users)
        self._record("users import", self.run("users", "import", str(users)))
        for n in range(self.users):
            start = TODAY - timedelta(days=30 + 7 * n)
            self._record("plans create", self._plan(n, start))

    def _plan(self, n: int, start: date) -> subprocess.CompletedProcess[str]:
        return self.run(
            "plans", "create", "--user", f"s{n:06d}", "--amount", "90.00",
            "--installments", "3", "--start", start.isoformat(),
        )  # fmt: skip

    def step(self, picker: random.Random, action: str | None = None) -> None:
        """One command: ``action``, or one picked at random."""
        action = action or picker.choice(ACTIONS + ("refund",))
        user = f"s{picker.randrange(self.users):06d}"
        if action == "sweep":
            as_of = TODAY - timedelta(days=picker.randrange(0, 60))
            done = self.run("debt", "sweep", "--as-of", as_of.isoformat())
        elif action == "pay":  # ids of the seeded plans' installments, and a few beyond
            chosen = {picker.randint(1, 3 * self.users + 6) for _ in range(picker.randint(1, 2))}
            extra: list[str] = []
            if len(chosen) == 1 and picker.random() < 0.7:  # one the reversals can name
                with self.lock:
                    self.next_payment += 1
                    extra = ["--reference", f"SOAK-P-{self.next_payment}"]
                if picker.random() < 0.5:
                    extra += ["--amount", picker.choice(["10.00", "12.50", "30.00"])]
            done = self.run("installments", "pay", *map(str, sorted(chosen)), *extra)
        elif action == "reverse":
            with self.lock:  # now and then a reversal reference again: duplicate or conflict
                if self.next_reversal and picker.random() < 0.15:
                    reversal = picker.randint(1, self.next_reversal)
                else:
                    self.next_reversal += 1
                    reversal = self.next_reversal
                payment = picker.randint(1, self.next_payment + 1)
            amount = picker.choice([None, "5.00", "10.00", "30.00"])
            done = self.run(
                "payments", "reverse", f"SOAK-P-{payment}", "--reference", f"SOAK-R-{reversal}",
                *(["--amount", amount] if amount else []),
            )  # fmt: skip
        elif action == "refund":
            with self.lock:
                self.next_refund += 1
                transaction = f"SOAK-{self.next_refund}"
            # Mostly the user's own seeded plan (created in user order), so that approvals
            # cut installments; sometimes another, which is refused (exit 3).
            own = int(user[1:]) + 1
            plan = own if picker.random() < 0.8 else picker.randint(1, self.users + 2)
            amount = picker.choice(["5.00", "30.00", "45.50", "120.00"])
            done = self.run(
                "refunds", "create", "--user", user, "--transaction-id", transaction,
                "--amount", amount, "--plan", str(plan),
            )  # fmt: skip
        elif action == "move":
            verb = picker.choice(["approve", "approve", "reject", "cancel"])
            done = self.run("refunds", verb, f"SOAK-{picker.randint(1, self.next_refund + 1)}")
        elif action == "webhook":
            rows = ["refund_id,status,merchant_reference,event_id"]
            for _ in range(picker.randint(1, 6)):
                status = picker.choice(["approved", "approved", "rejected", "processing"])
                rows.append(f"SOAK-{picker.randint(1, self.next_refund + 1)},{status},M,")
            done = self.run("webhooks", "ingest", "-", "--format", "csv", stdin="\n".join(rows))
        elif action == "plan":
            start = TODAY - timedelta(days=picker.randrange(0, 90))
            done = self._plan(int(user[1:]), start)
        else:
            with self.lock:
                first, self.next_user = self.next_user, self.next_user + 3
            path = self.workdir / f"soak-users-{first}.csv"
            _users_file(path, first, 3)
            done = self.run("users", "import", str(path))
        self._record(action, done)

    def soak(self, seconds: float, workers: int = 4, seed: int = 1) -> SoakReport:
        self.seed()
        deadline = time.monotonic() + seconds

        def worker(number: int) -> None:
            picker = random.Random(seed * 100 + number)  # noqa: S311 - a workload, not security
            # Every kind of command once first (each worker in another order), however
            # short the run; then a random mix until the deadline.
            for action in ACTIONS[number % len(ACTIONS) :] + ACTIONS[: number % len(ACTIONS)]:
                self.step(picker, action)
            while time.monotonic() < deadline:
                self.step(picker)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        checked = self.run("verify", "-o", "json")
        self.report.verify = json.loads(checked.stdout) if checked.stdout else {}
        if checked.returncode not in (0, 69):
            self.report.unexpected.append(f"verify: exit {checked.returncode}")
        return self.report
