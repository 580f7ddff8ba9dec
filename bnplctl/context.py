"""What a run of bnplctl works with, built once at the composition root and passed down.

The CLI's root callback (``cli/app.py``) builds one :class:`Context` per command from
the options and the environment, and a command hands its parts on: ``context.db`` to
open units of work, ``context.clock`` for today in the business time zone,
``context.actor`` for the audit trail, ``context.chunks`` for the batch files' chunk
sizes, ``context.stdout``/``stderr`` for the renderer. Nothing below the root reads the
environment, the settings or a module's global state: a test builds the context it
wants (``Context(chunks=ChunkSizes(webhooks=3))``) and passes it to the CLI runner
(``invoke(app, args, obj=context)``) instead of patching module constants. The
scheduler is built the same way (``scheduler.build(context)``).

The settings are read the first time they are asked for (``bnplctl --help``, ``db
stop`` or a usage error never read them, and a bad value is exit 78 where it is
needed), and so is the database: a command that never touches it never starts the
embedded server or loads SQLAlchemy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, TextIO

from bnplctl import clock

if TYPE_CHECKING:
    from bnplctl.config import Settings
    from bnplctl.db import Database

# Rows per transaction of a batch file, by kind: large enough that a chunk's round trips
# are a small part of its work, small enough that a stop loses little.
CHUNK_ROWS = 5000


@dataclass(frozen=True)
class ChunkSizes:
    """Rows per chunk (one transaction each) of the three batch files."""

    users: int = CHUNK_ROWS
    webhooks: int = CHUNK_ROWS
    payments: int = CHUNK_ROWS


@dataclass(frozen=True)
class Clock:
    """Time for a run: the instant (``clock.now``, UTC) and today in the business time
    zone of the settings it was made with."""

    timezone: str

    def now(self) -> datetime:
        return clock.now()

    def today(self) -> date:
        return clock.today(self.timezone)


def load_settings() -> Settings:
    """The settings from the environment and the env file: read here, at the root only."""
    from bnplctl.config import Settings

    return Settings()


@dataclass(frozen=True)
class Context:
    """One run's settings, database, clock, streams, actor and chunk sizes (frozen: a
    command that needs another derives one with ``dataclasses.replace``).

    ``given_settings``: settings to use instead of reading them (tests, the bench);
    ``actor``: who acts, as the audit trail records it (the root resolves ``--actor``,
    ``BNPL_ACTOR`` and the OS user); ``stdout``/``stderr``: where the renderer writes
    (the process's at the time the context is built)."""

    given_settings: Settings | None = None
    actor: str | None = None
    # Why ``BNPL_ACTOR`` cannot be the actor: said (exit 78) when the command runs, unless
    # ``--actor`` after the command replaces it.
    actor_problem: str | None = None
    debug: bool = False
    chunks: ChunkSizes = field(default_factory=ChunkSizes)
    stdout: TextIO | None = field(default=None, compare=False)
    stderr: TextIO | None = field(default=None, compare=False)

    @cached_property
    def settings(self) -> Settings:
        return self.given_settings if self.given_settings is not None else load_settings()

    @cached_property
    def db(self) -> Database:
        from bnplctl.db import Database

        return Database(self.settings)

    @cached_property
    def clock(self) -> Clock:
        return Clock(self.settings.timezone)

    @property
    def out(self) -> TextIO:
        """Standard output as the renderer writes it (None when started with it closed)."""
        return self.stdout if self.stdout is not None else sys.stdout

    @property
    def err(self) -> TextIO:
        return self.stderr if self.stderr is not None else sys.stderr

    @property
    def acting(self) -> str:
        """The actor of the audit trail: the one given, else the operating-system user."""
        if self.actor:
            return self.actor
        if self.actor_problem is not None:
            from bnplctl.errors import ConfigError

            raise ConfigError(self.actor_problem)
        from bnplctl.config import os_actor

        return os_actor()

    def close(self) -> None:
        """Release the database's connections, when it was opened."""
        database = self.__dict__.get("db")
        if database is not None:
            database.dispose()
