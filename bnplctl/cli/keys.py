"""``bnplctl keys``: the secret key that protects passports and card fingerprints."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import OutputFormat, OutputOption, for_people

if TYPE_CHECKING:
    from bnplctl.crypto import KeyFile

app = typer.Typer(
    help="The secret keyring: create it, show it, rotate its key, retire old keys.\n\n"
    "Example: bnplctl keys status",
    rich_markup_mode=None,
)


@app.command("init")
def init(
    path: Annotated[
        str, typer.Argument(metavar="PATH", help="The new key file; must not exist yet.")
    ],
) -> None:
    """Create a new keyring at PATH (mode 0600) with one key, key 0, primary; never
    overwrites anything.

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
    master = crypto.new_keyring(clock.now())
    if app_context().settings.database_url is None:
        _write(target, master)
        checked = (
            "no database was checked (BNPL_DATABASE_URL is not set): the first command"
            " that uses the key records its check"
        )
    else:
        from bnplctl.services.secret_key import record_new_keyring

        with app_context().db.unit() as work:
            connection = work.connection
            record_new_keyring(
                connection, master, path=target, actor=current_actor(), now=clock.now()
            )
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


def _write(path: Path, keyring: "KeyFile") -> None:
    from bnplctl import crypto
    from bnplctl.errors import OutputError, UsageProblem

    try:
        crypto.write_keyring(path, keyring)
    except FileExistsError:  # made meanwhile
        raise UsageProblem(f"{path} already exists: keys init never overwrites anything") from None
    except OSError as exc:
        raise OutputError(f"keys init: {path} cannot be written ({exc.strerror})") from None


@app.command("status")
def status(output: OutputOption = OutputFormat.table) -> None:
    """The keyring: each key's id, purpose, status (enabled, retired), whether it is
    primary, its age against BNPL_KEY_MAX_AGE_DAYS (365), the passports and card
    fingerprints under it; an unfinished rotation with its progress; the key file's
    mode. Never a key or its check.

    A retired key is used for nothing: passports under it could not be read (so keys
    retire refuses while any is), and the card fingerprints made under it no longer
    recognise a card (card numbers are never stored, so they cannot be made again).
    Exit 0; 69 when `status` would be unhealthy for the keys (an over-age primary key, an
    unfinished rotation, passports under a key the file lacks).

    Example: bnplctl keys status -o json
    """
    from bnplctl import clock
    from bnplctl.cli.output import message, render_list, render_one
    from bnplctl.errors import ExitCode
    from bnplctl.services.keys import key_report, summary

    context = app_context()
    with context.db.unit(readonly=True) as work:
        report = key_report(
            work.dbapi,
            context.settings.key_file,
            max_age_days=context.settings.key_max_age_days,
            now=clock.now(),
        )
    if for_people(output):
        render_list(
            report["keys"],
            output,
            columns=(
                "key_id", "status", "primary", "age_days", "passports", "card_fingerprints",
                "in_file", "in_database", "created_at",
            ),
            title="Secret keys",
            drop=("created_at", "in_database", "in_file"),
        )  # fmt: skip
        file = report["file"]
        if file.get("path") is None:
            message("key file: BNPL_SECRET_KEY_FILE is not set")
        elif not file.get("exists"):
            message(f"key file: {file['path']} does not exist")
        else:
            exposed = ", readable by group or others: chmod 600 it" if file["exposed"] else ""
            shown = file.get("format") or file.get("error")
            message(f"key file: {file['path']} ({shown}, mode {file['mode']}{exposed})")
        message(f"keys: {summary(report)}")
        for key in report["keys"]:
            if key["card_fingerprints"] and not key["primary"] and key["status"] == "enabled":
                message(
                    f"key {key['key_id']}: {key['card_fingerprints']} card fingerprint(s) made"
                    " under it recognise a card only while it is enabled (card numbers are"
                    f" never kept: `keys retire {key['key_id']}` ends that)"
                )
        for problem in report["problems"]:
            message(f"problem: {problem}")
    else:
        render_one(report, output)
    if report["problems"]:
        raise typer.Exit(ExitCode.UNHEALTHY)


@app.command("rotate")
def rotate(
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish an unfinished rotation (after a kill or a stop)."),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Add a new key to the keyring, make it primary, and re-encrypt every passport
    (and its blind index) under it, online, in batches.

    Every other command keeps working meanwhile: new passports go under the new key at
    once, and a passport stored under either key is a duplicate. Killed at any point,
    `keys rotate --resume` finishes it (each passport re-encrypted once in effect). The
    key file is rewritten whole (mode 0600, the old keys kept): run it as the user that
    owns the file. Refused (3) while a rotation is unfinished; 75 while another rotate or
    retire runs; 69 when a passport cannot be decrypted (the rotation stays unfinished:
    `bnplctl verify --keys` lists them). Then `keys retire OLD_ID` when you wish.

    Example: bnplctl keys rotate
    """
    from bnplctl import clock
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message, render_one, row_progress
    from bnplctl.services.keys import rotate as rotate_keys

    context = app_context()
    with row_progress("re-encrypting passports") as progress:
        result = rotate_keys(
            context.db,
            context.settings,
            resume=resume,
            actor=current_actor(),
            now=clock.now,
            progress=progress,
        )
    if result is None:
        message("nothing to resume: no key rotation is unfinished")
        return
    shown = result.public()
    if not for_people(output):
        render_one(shown, output)
    rotation = result.rotation
    began = "rotated" if result.started else "resumed and finished the rotation"
    message(
        f"{began} from key {rotation.from_key_id} to key {rotation.to_key_id}:"
        f" {result.rows_rotated} passport(s) re-encrypted in {shown['duration_seconds']} s;"
        f" key {rotation.to_key_id} is primary; `bnplctl keys retire {rotation.from_key_id}`"
        " once no backup you may restore needs it"
    )


@app.command("retire")
def retire(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key id (keys status).")],
) -> None:
    """Mark key ID retired, in the key file and the database: used for nothing from then
    on (audited key.retired).

    Refused (3) while it is the primary key, in an unfinished rotation, or any passport is
    under it (counts given); 4 when neither the key file nor the database knows it. Card
    fingerprints made under it no longer recognise a card after it (they cannot be made
    again: card numbers are never stored); their count is said.

    Example: bnplctl keys retire 0
    """
    from bnplctl import clock, crypto
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message
    from bnplctl.services.keys import retire as retire_key

    if not 0 <= key_id <= crypto.MAX_KEY_ID:
        from bnplctl.errors import UsageProblem

        raise UsageProblem(f"keys retire: ID must be 0 to {crypto.MAX_KEY_ID}")
    context = app_context()
    done = retire_key(context.db, context.settings, key_id, actor=current_actor(), now=clock.now)
    if done.already:
        message(f"key {key_id} was retired before; nothing changed")
        return
    cards = ""
    if done.card_fingerprints:
        cards = (
            f"; the {done.card_fingerprints} card fingerprint(s) made under it no longer"
            " recognise a card"
        )
    message(f"key {key_id} retired{cards}")
