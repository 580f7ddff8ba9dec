"""``bnplctl keys``: the secret key that protects passports and card fingerprints."""

import os
from pathlib import Path
from typing import Annotated

import typer

from bnplctl.cli.context import app_context

app = typer.Typer(
    help="The secret key: create the key file of an external database.\n\n"
    "Example: bnplctl keys init /etc/bnplctl/secret.key",
    rich_markup_mode=None,
)


@app.command("init")
def init(
    path: Annotated[
        str, typer.Argument(metavar="PATH", help="The new key file; must not exist yet.")
    ],
) -> None:
    """Create a new secret key file at PATH (mode 0600); never overwrites anything.

    With BNPL_DATABASE_URL set, the database is checked first and records the new key's
    check: refused (exit 3) when it already has a key, unreachable 75, not migrated 78;
    nothing is written then. Without it, no database is checked. Then set
    BNPL_SECRET_KEY_FILE=PATH, and keep a copy: passports cannot be read without it.

    Example: bnplctl keys init /etc/bnplctl/secret.key
    """
    from bnplctl import clock, crypto
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message

    target = _new_key_path(path)
    master = crypto.new_key()
    if app_context().settings.database_url is None:
        _write(target, master)
        checked = (
            "no database was checked (BNPL_DATABASE_URL is not set): the first command"
            " that uses the key records its check"
        )
    else:
        from bnplctl.services.secret_key import record_new_key

        with app_context().db.unit() as work:
            connection = work.connection
            record_new_key(connection, master, path=target, actor=current_actor(), now=clock.now())
            _write(target, master)  # before the commit: a check is never left without its file
        checked = "the database now records its check"
    message(
        f"created the secret key file {target} (mode 0600); {checked}; set"
        f" BNPL_SECRET_KEY_FILE={target} and keep a copy: passports cannot be read without it"
    )


def _new_key_path(given: str) -> Path:
    """Where ``keys init`` may create a key, made absolute: a file name in a directory that
    exists, with nothing (not even a dangling link) there yet; never standard output."""
    from bnplctl.errors import UsageProblem

    if not given.strip():
        raise UsageProblem("keys init: the PATH is empty: give the key file's path")
    if given == "-":
        raise UsageProblem(
            "keys init writes the key to a file, never to standard output: give a PATH"
        )
    if given.endswith(("/", "/.")) or given in (".", ".."):
        raise UsageProblem(f"keys init: {given} names a directory; give the key file's PATH")
    path = Path(given).absolute()  # as BNPL_SECRET_KEY_FILE must name it, from anywhere
    if os.path.lexists(path):
        raise UsageProblem(f"{path} already exists: keys init never overwrites anything")
    if not path.parent.is_dir():
        raise UsageProblem(
            f"keys init: the directory {path.parent} does not exist (create it, mode 0700)"
        )
    return path


def _write(path: Path, master: bytes) -> None:
    from bnplctl import crypto
    from bnplctl.errors import OutputError, UsageProblem

    try:
        crypto.write_key(path, master)
    except FileExistsError:  # made meanwhile
        raise UsageProblem(f"{path} already exists: keys init never overwrites anything") from None
    except OSError as exc:
        raise OutputError(f"keys init: {path} cannot be written ({exc.strerror})") from None
