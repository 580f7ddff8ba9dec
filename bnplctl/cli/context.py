"""The running command's context, as the CLI's root built it (``cli/app.py``'s ``root``),
and the run's ``--log-file``. Imported by every command module, so it imports none.

Both live on the run's click context, which Typer hands to a command declaring
``ctx: typer.Context``; the commands, their option parsers and the renderer reach it
through ``get_current_context`` instead, which is what Typer itself calls to hand it
over (Typer 0.28 ships its own click, ``typer._click``: the pin in pyproject.toml keeps
the two together)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bnplctl.context import Context

if TYPE_CHECKING:
    from bnplctl.joblog import JobLog

# Where a run's ``--log-file`` is kept: click's per-run dictionary (``Context.meta``),
# shared by the root's context and the command's.
JOB_LOG = "bnplctl.job_log"


def app_context() -> Context:
    """The run's context, built by the root callback (``root``) for the command running."""
    from typer._click.globals import get_current_context

    obj = get_current_context().find_root().obj
    if not isinstance(obj, Context):  # a command run without the root: never in bnplctl
        raise RuntimeError("bnplctl's context is built by the root command")
    return obj


def running_context() -> Context | None:
    """The run's context, or None before the root built it (``--help``, a usage error)."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Context) else None


def job_log() -> JobLog | None:
    """The run's ``--log-file``, when it has one: its result and messages go there."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return ctx.meta.get(JOB_LOG) if ctx is not None else None


def log_to(path_text: str | None, command: str) -> None:
    """``--log-file PATH``: from here on, the command's result, messages and error go to
    that file as one JSON line with the exit code, not to stdout or stderr."""
    if path_text is not None:
        from typer._click.globals import get_current_context

        from bnplctl.joblog import JobLog, opened

        get_current_context().meta[JOB_LOG] = JobLog(opened(path_text), command)


def current_actor() -> str:
    """``--actor`` when given, else ``BNPL_ACTOR``, else the operating-system user."""
    return app_context().acting
