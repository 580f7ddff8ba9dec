"""The root Typer app and the one error boundary.

Every domain exception becomes a one-line message on stderr and its exit code;
anything unexpected is exit 1 with a one-line message, the traceback only with
``--debug``. The command groups are imported and built only when named
(``LAZY_GROUPS``), and import nothing heavy themselves, so ``bnplctl --help`` stays
fast. Nor do they use ``from __future__ import annotations``: Typer reads every
parameter's annotation to build the command tree, and string annotations would cost an
``eval`` each (about 15 ms of every start).
"""

import contextlib
import re
import sys
import traceback
from dataclasses import replace
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from bnplctl import __version__
from bnplctl.cli.context import JOB_LOG
from bnplctl.context import Context
from bnplctl.errors import BnplError, ExitCode, Terminated


def _end_job_log(ctx: Any, code: int) -> None:
    """The run's line in its log file. A log that cannot be written is said on stderr,
    with the run's own error; a run that succeeded then exits 74."""
    log = ctx.meta.pop(JOB_LOG, None)
    if log is None:
        return
    try:
        log.finish(code)
    except OSError as exc:
        from bnplctl.cli.output import error

        if code and log.error:
            error(log.error)
        error(f"cannot write the log file {log.path}: {exc.strerror or type(exc).__name__}")
        if not code:
            raise typer.Exit(ExitCode.OUTPUT_FAILED) from None


def _fail(text: str, code: int) -> typer.Exit:
    from bnplctl.cli.output import error

    error(text)
    return typer.Exit(code=code)


_SERVER_DETAILS = ("DETAIL:", "CONTEXT:", "HINT:")
# Where a withheld block ends: the traceback's own lines and SQLAlchemy's annotations.
_TRACEBACK_LINE = re.compile(
    r"(Traceback |  File |The above exception|During handling|\[SQL: |\[parameters: "
    r"|\(Background on this error|[A-Za-z_][\w]*(\.[\w]+)+: |[A-Za-z_]\w*(Error|Exception): )"
)


def withhold_server_details(text: str) -> str:
    """``text`` without a server's DETAIL, CONTEXT and HINT (each may quote row data,
    over several lines when a value holds a newline): from such a line to the next line
    of the traceback itself."""
    shown: list[str] = []
    withholding = False
    for line in text.splitlines():
        label = line.lstrip().split(":", 1)[0] + ":"
        if label in _SERVER_DETAILS:
            shown.append(f"{label}  (withheld: it may quote personal data)")
            withholding = True
        elif withholding and not _TRACEBACK_LINE.match(line):
            continue
        else:
            withholding = False
            shown.append(line)
    return "\n".join(shown)


def _noted(message: str, exc: BaseException) -> str:
    """The error's one line, with the notes the command added to it (a batch stopped
    midway: what stays; never data from the rows)."""
    return "; ".join([message, *getattr(exc, "__notes__", ())])


def _is_cli_signal(exc: Exception) -> bool:
    """Typer's own exits, aborts and usage errors: they keep their meaning (exit 0/1/2)."""
    return type(exc).__module__.startswith(("typer.", "click."))


# The command groups, loaded only when named: ``bnplctl --help`` and a command of one group
# then never import or build the others (Typer reads every parameter of every command it
# builds). Each with the one line the root help lists; a test keeps it equal to the
# group's own help.
LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "users": ("bnplctl.cli.users", "Onboard and look up users."),
    "plans": (
        "bnplctl.cli.plans",
        "Installment plans: preview the schedule, create, list, show.",
    ),
    "installments": ("bnplctl.cli.installments", "Installments: list them, record payments."),
    "payments": (
        "bnplctl.cli.payments",
        "Payments received: import the processor's files, list them, reverse them.",
    ),
    "debt": ("bnplctl.cli.debt", "Debt: what a user owes."),
    "refunds": ("bnplctl.cli.refunds", "Refunds: create, approve, reject, cancel, list, show."),
    "webhooks": ("bnplctl.cli.webhooks", "Merchant refund-status webhook files."),
    "scheduler": (
        "bnplctl.cli.scheduler",
        "The long-lived scheduler: nightly sweep, hourly key purge.",
    ),
    "db": ("bnplctl.cli.db", "Schema migrations and the embedded PostgreSQL server."),
    "audit": ("bnplctl.cli.audit", "The audit trail: who changed what, and when."),
    "keys": (
        "bnplctl.cli.keys",
        "The secret keyring: create it, show it, rotate its key, retire old keys.",
    ),
}


def load_group(name: str) -> Any:
    """The click group of one of ``LAZY_GROUPS``, built from its module's Typer app."""
    import importlib

    module = importlib.import_module(LAZY_GROUPS[name][0])
    group = typer.main.get_group(module.app)
    group.name = name
    return readable(group)


def readable(command: Any) -> Any:
    """``command`` (and its subcommands) with help a person reads: each example kept on
    its own lines as written (a line ending in `` \\`` goes on, as in a shell), and every
    option's value named in words (``N``, ``AMOUNT``), never a Python type."""
    for sub in getattr(command, "commands", {}).values():
        readable(sub)
    if command.help:
        command.help = command.help.replace("\n\nExample: ", "\n\n\b\nExample: ")
    for param in command.params:
        if param.param_type_name == "argument":
            _plain_argument(param)
            continue
        if param.is_flag or param.metavar is not None:
            continue
        choices = getattr(param.type, "choices", None)
        if choices:
            param.metavar = "[" + "|".join(str(choice) for choice in choices) + "]"
        elif param.type.name in ("integer", "integer range"):
            param.metavar = "N"
        else:
            param.metavar = (param.name or "value").upper()
    return command


def _plain_argument(param: Any) -> None:
    """An argument shown as click shows it, ``INSTALLMENT_ID...`` (``[FILE]`` when
    optional), not in Typer's braces."""
    name = param.metavar or (param.name or "value").upper()
    shown = name + ("..." if param.nargs != 1 and not name.endswith("...") else "")
    shown = shown if param.required else f"[{shown}]"
    param.make_metavar = lambda *args, **kwargs: shown


def accept_actor_after_the_command(command: Any) -> Any:
    """``command`` (and its subcommands) taking ``--actor NAME`` too, hidden from its help:
    the option is the root's (``bnplctl --actor cron debt sweep``), but cron lines and
    scripts write it after the command (``bnplctl debt sweep --actor cron``). Click parses
    it as the command's own option, so a value that merely looks like it (``--reason
    --actor``) stays a value; given there, it wins over the root's and ``BNPL_ACTOR``."""
    from typer.core import TyperOption

    for sub in getattr(command, "commands", {}).values():
        accept_actor_after_the_command(sub)
    if not any(param.name == "actor_after_the_command" for param in command.params):
        command.params.append(
            TyperOption(
                param_decls=["--actor", "actor_after_the_command"],
                metavar="NAME",
                hidden=True,
                expose_value=False,
                callback=_actor_after_the_command,
                help="Who is acting, as the root's --actor.",
            )
        )
    return command


def _actor_after_the_command(ctx: Any, param: Any, value: str | None) -> None:
    """``--actor`` after the command: it replaces the root's actor and a malformed
    ``BNPL_ACTOR``; without it, a malformed ``BNPL_ACTOR`` is said now, as the command
    (not a group on the way to one) is about to run."""
    root = ctx.find_root()
    if value is not None:
        root.obj = replace(root.obj, actor=_actor_option_value(value), actor_problem=None)
    elif root.obj.actor_problem is not None and not hasattr(ctx.command, "commands"):
        from bnplctl.errors import ConfigError

        raise ConfigError(root.obj.actor_problem)


class BoundaryGroup(TyperGroup):
    """The root group: maps what a command raises to a message and an exit code, and
    loads a command group only when it is named (``LAZY_GROUPS``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        readable(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(name for name in LAZY_GROUPS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            self.commands[cmd_name] = load_group(cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None:
            return None
        return readable(accept_actor_after_the_command(command))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Typer's, with its "Did you mean" drawn from every command, loaded or not."""
        from difflib import get_close_matches

        name = args[0] if args else ""
        known = self.list_commands(ctx)
        if name and not name.startswith("-") and name not in known and not ctx.resilient_parsing:
            matches = get_close_matches(name, known)
            hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """As Typer lists them, with the lazy groups' lines from ``LAZY_GROUPS``."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, self.commands[name].get_short_help_str(limit))
            if name in self.commands
            else (name, LAZY_GROUPS[name][1])
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:
        """The command, within the error boundary; then its line in ``--log-file``'s
        file, with the exit code, when it has one."""
        code: int = ExitCode.INTERNAL
        try:
            outcome = self._invoke_within_boundary(ctx)
            code = ExitCode.OK
            return outcome
        except typer.Exit as stop:
            code = stop.exit_code
            raise
        except Exception as exc:
            code = getattr(exc, "exit_code", ExitCode.INTERNAL)  # click's usage errors: 2
            raise
        finally:
            _end_job_log(ctx, code)

    def _invoke_within_boundary(self, ctx: Any) -> Any:
        # After Typer's own, which prints everything.
        sys.excepthook = lambda *raised: _quiet_excepthook(*raised, debug=_debugging(ctx))
        try:
            return super().invoke(ctx)
        except BnplError as exc:
            self._maybe_traceback(ctx)
            raise _fail(_noted(exc.message, exc), exc.exit_code) from None
        except BrokenPipeError as exc:
            # ``bnplctl users list -o csv | head``: stop quietly, as a shell tool does;
            # a batch that committed chunks says how many rows they hold (stderr).
            from bnplctl.cli.streams import silence_stdout

            silence_stdout()
            if getattr(exc, "__notes__", None):
                raise _fail(
                    _noted("the output's reader went away", exc), ExitCode.BROKEN_PIPE
                ) from None
            raise typer.Exit(code=ExitCode.BROKEN_PIPE) from None
        except KeyboardInterrupt as exc:
            raise _fail(
                _noted(
                    "interrupted: what was committed before stays, the rest was rolled back", exc
                ),
                ExitCode.INTERRUPTED,
            ) from None
        except Terminated as exc:
            raise _fail(
                _noted(
                    "terminated (SIGTERM): what was committed before stays, the rest was"
                    " rolled back",
                    exc,
                ),
                ExitCode.TERMINATED,
            ) from None
        except Exception as exc:
            if _is_cli_signal(exc):
                raise
            self._maybe_traceback(ctx)
            from bnplctl.db import recognised_database_error

            database = recognised_database_error(exc)
            if database is not None:
                raise _fail(_noted(database.message, exc), database.exit_code) from None
            raise _fail(
                f"internal error ({type(exc).__name__}); rerun with --debug for the traceback",
                ExitCode.INTERNAL,
            ) from None

    @staticmethod
    def _maybe_traceback(ctx: Any) -> None:
        """With --debug, the traceback; a server's DETAIL, CONTEXT and HINT lines (which
        can quote a whole row: "Failing row contains (…)", "COPY user_rows, line 1: …")
        are withheld."""
        if _debugging(ctx):
            sys.stderr.write(withhold_server_details(traceback.format_exc()) + "\n")


def _debugging(ctx: Any) -> bool:
    """Whether the run was given ``--debug`` (before the root callback ran: no)."""
    return bool(getattr(ctx.find_root().obj, "debug", False))


app = typer.Typer(
    cls=BoundaryGroup,
    name="bnplctl",
    help="Operator CLI and batch tool of a Buy-Now-Pay-Later debt & refund service.\n\n"
    "Example: bnplctl demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Typer's Rich help costs ~100 ms of imports on every --help.
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bnplctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of an internal error.")
    ] = False,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            envvar="BNPL_ACTOR",
            help="Who is acting, for the audit trail (default: the OS user).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Operator CLI and batch tool of a Buy-Now-Pay-Later debt & refund service."""
    given = ctx.obj if isinstance(ctx.obj, Context) else Context()
    actor_given, actor_problem = _root_actor(ctx, actor)
    context = replace(
        given,
        debug=debug or given.debug,
        actor=actor_given or given.actor,
        actor_problem=actor_problem,
        stdout=given.stdout or sys.stdout,
        stderr=given.stderr or sys.stderr,
    )
    ctx.obj = context
    # The context at the end of the run (``--actor`` after the command replaces it).
    ctx.call_on_close(lambda: ctx.obj.close())
    _cancel_statements_on_stop(ctx)


def _cancel_statements_on_stop(ctx: Any) -> None:
    """A stop (Ctrl-C, SIGTERM) while a statement runs or waits for a lock: its Python
    handler runs only once the statement returns, so a thread of the run's, woken by the
    signal itself (``signal.set_wakeup_fd``), cancels the run's statements on the server
    (``Database.cancel_running``); the statement returns at once and the handler says the
    stop. Only in the main thread (the one signals go to), undone when the run ends; the
    scheduler's long run, whose SIGTERM lets the running job finish, turns it off."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    try:
        previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter's main thread
        os.close(reader)
        os.close(writer)
        return
    stops = {signal.SIGINT, signal.SIGTERM}

    def watch() -> None:
        try:
            while woken := os.read(reader, 64):
                database = ctx.obj.__dict__.get("db")  # made by the run, if it was
                if database is not None and stops.intersection(woken):
                    database.cancel_running()
        finally:
            os.close(reader)

    threading.Thread(target=watch, name="bnpl-stop", daemon=True).start()

    def restore() -> None:
        with contextlib.suppress(ValueError):
            if signal.set_wakeup_fd(previous) != writer:  # set by another meanwhile
                signal.set_wakeup_fd(-1)
        os.close(writer)  # the watcher reads the end of the pipe and ends

    ctx.call_on_close(restore)


def _root_actor(ctx: typer.Context, actor: str | None) -> tuple[str | None, str | None]:
    """The root's ``--actor``, or ``BNPL_ACTOR`` (a blank one is unset, as for every
    setting); and why a malformed ``BNPL_ACTOR`` cannot be the actor (a configuration
    error, 78, unless ``--actor`` after the command replaces it)."""
    if actor is None:
        return None, None
    source = ctx.get_parameter_source("actor")
    if source is not None and source.name == "ENVIRONMENT":
        from bnplctl.errors import InvalidInput

        try:
            return (checked_actor(actor) if actor.strip() else None), None
        except InvalidInput as exc:
            return None, f"BNPL_ACTOR: {exc.message.partition(': ')[2]}"
    return _actor_option_value(actor), None


def checked_actor(actor: str) -> str:
    """The audit trail's actor, a person's or a job's name: 1 to 100 characters (its
    column), with the guard names have (no control characters, no number of 5 or more
    digits: a card or passport number never goes in it), no bidi controls."""
    from bnplctl.errors import InvalidInput
    from bnplctl.validators import person_name

    value = actor.strip()
    if not value or len(value) > 100:
        raise InvalidInput("actor: 1 to 100 characters")
    return person_name(value, "actor")  # bidi controls included


def _actor_option_value(actor: str) -> str:
    """``--actor``'s value, checked: malformed, a usage error (exit 2) naming the option."""
    from bnplctl.errors import InvalidInput

    try:
        return checked_actor(actor)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message.partition(": ")[2], param_hint="'--actor'") from None


def _register() -> None:
    from bnplctl.cli import demo, status, verify

    app.command("status")(status.status)
    app.command("verify")(verify.verify)
    app.command("demo")(demo.demo)


_register()


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM stops a command the way Ctrl-C does (the error boundary says so, exit 143)
    instead of killing it mid-write; the scheduler replaces this with its own clean stop."""
    raise Terminated


def _quiet_excepthook(
    kind: type[BaseException], value: BaseException, tb: Any, *, debug: bool
) -> None:
    """What C code prints through ``PyErr_Print``: psycopg2 does, when the connection
    dies during a COPY, and the server's error then carries a CONTEXT line quoting the
    row being copied, phone number and all. The error boundary reports every failure of
    a command in its one line; this adds nothing, but with --debug the traceback without
    the server's details."""
    if debug:
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(withhold_server_details(text) + "\n")


def main() -> None:
    """Console-script entry point. Help, ``--version`` and usage errors are written
    before any command runs, outside the error boundary: a failed write there ends the
    same way as in a command (exit 141 when the reader went away, 74 otherwise)."""
    import signal

    from bnplctl.cli.streams import silence_stdout, tolerate_narrow_encodings

    signal.signal(signal.SIGTERM, _terminate)
    tolerate_narrow_encodings()
    try:
        app(prog_name="bnplctl")
    except OSError as exc:
        silence_stdout()
        if isinstance(exc, BrokenPipeError):
            sys.exit(ExitCode.BROKEN_PIPE)
        from bnplctl.cli.output import error

        error(f"cannot write the output ({exc.strerror or type(exc).__name__})")
        sys.exit(ExitCode.OUTPUT_FAILED)


def run() -> NoReturn:
    """The console script and ``python -m bnplctl``: :func:`main`, then a quick exit.

    Once a command's output is flushed and the ``atexit`` hooks (logging's flush,
    coverage's save, the embedded server's client) have run, the process ends without
    tearing the interpreter down one object at a time: with SQLAlchemy and pydantic
    loaded that teardown takes 0.1-0.25 s on a two-core machine, longer than the work of
    most commands. A non-daemon thread still running gets the usual exit, which waits."""
    import threading

    try:
        main()
        code = 0
    except SystemExit as stop:
        code = _exit_status(stop.code)
    if any(
        not thread.daemon
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
    ):
        sys.exit(code)
    from bnplctl.tuning import end_process

    end_process(_flush_standard_streams(code, (sys.stdout, sys.stderr)))


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as the interpreter turns it into a process status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _flush_standard_streams(code: int, streams: tuple[Any, ...]) -> int:
    """Flush the process's stdout and stderr (``streams``) as the interpreter would at
    exit; a reader gone away is exit 141 and another failed write exit 74, unless the
    command already failed."""
    for stream in streams:
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or ExitCode.BROKEN_PIPE
        except OSError:
            code = code or ExitCode.OUTPUT_FAILED
    return code
