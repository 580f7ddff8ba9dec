"""``bnplctl users``: onboard, import, list and show users (always masked)."""

from datetime import date
from typing import Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import (
    AllOption,
    FilesArgument,
    FormatOption,
    InputFormat,
    LimitOption,
    OutputFormat,
    OutputOption,
    checked_option,
    sort_option,
)
from bnplctl.sorting import USER_SORT
from bnplctl.statuses import UserStatus

app = typer.Typer(
    help="Onboard and look up users. Phone, passport and card are always masked.\n\n"
    "Example: bnplctl users import users.csv",
    rich_markup_mode=None,
)

# Every field of -o json, so that CSV carries what JSON does; a narrow table drops the
# columns of USER_DROP first, in that order.
USER_LIST_COLUMNS = (
    "user_id",
    "full_name",
    "status",
    "phone_number",
    "date_of_birth",
    "passport_number",
    "card_number",
    "card_brand",
    "created_at",
)
USER_DROP = (
    "created_at", "card_brand", "card_number", "passport_number", "date_of_birth", "phone_number"
)  # fmt: skip


@app.command("add")
def add(
    name: Annotated[str, typer.Option("--name", help="Full name.")],
    dob: Annotated[
        date, checked_option("--dob", "birth_date", "Date of birth, YYYY-MM-DD (age >= 18).")
    ],
    phone: Annotated[
        str | None,
        typer.Option("--phone", help="International format, e.g. +998901234567; omit to be asked."),
    ] = None,
    passport: Annotated[
        str | None,
        typer.Option("--passport", help="Letters then digits; omit to be asked (no echo)."),
    ] = None,
    card: Annotated[
        str | None,
        typer.Option("--card", help="12-19 digits, Luhn; omit to be asked (no echo)."),
    ] = None,
    user_id: Annotated[
        str | None, checked_option("--user-id", "new_user", "Generated (usr-…) when absent.")
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    r"""Onboard one user; prints the masked user.

    A phone, passport or card left out is asked for on the terminal (passport and card
    without echo, each checked as it is typed and asked again when wrong), or read one
    per line from standard input when it is not a terminal, so that a script need not
    put them on the command line.

    Example: bnplctl users add --user-id usr-001 --name "John Doe" --phone +998901234567 \
      --passport AA1234567 --card 4111111111111111 --dob 1990-05-20

    Example: printf '%s\n%s\n' "$PASSPORT" "$CARD" | bnplctl users add --name "Ann Lee" \
      --phone +998901234599 --dob 1990-01-01 -o json
    """
    from bnplctl.cli.output import render_one, warning
    from bnplctl.errors import InvalidInput
    from bnplctl.schemas import UserCreate, user_problems
    from bnplctl.services.users import onboard, public_user

    context = app_context()
    today = context.clock.today()
    given = {"user_id": user_id, "name": name, "dob": dob}
    personal = {"phone": phone, "passport": passport, "card": card}
    if None in personal.values() and _stdin_is_terminal():
        # What fails anyway is reported before anyone types a secret for nothing: no key
        # to encrypt the passport with, then the options given.
        context.settings.required_key_file()
        options = {field: value for field, value in personal.items() if value is not None}
        problems = user_problems(given | options, today)
        if problems:
            raise InvalidInput(next(iter(problems.values())))
    phone = _asked(phone, "--phone", "Phone", secret=False)
    passport = _asked(passport, "--passport", "Passport", secret=True)
    card = _asked(card, "--card", "Card", secret=True)
    fields = given | {"phone": phone, "passport": passport, "card": card}
    candidate = UserCreate.parse(fields, today)
    with context.db.unit() as work:
        session = work.session
        user = onboard(
            session, candidate, settings=context.settings, actor=context.acting, warn=warning
        )
        shown = public_user(user)
    render_one(shown, output, title=f"User {shown['user_id']}")


def _stdin_is_terminal() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()


def _read_answer(label: str, *, secret: bool) -> str:
    """One answer typed at the terminal, the question on stderr (a secret without echo,
    through ``getpass``); EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C."""
    import sys

    if secret:
        import getpass

        return getpass.getpass(f"{label}: ")  # asks on the terminal itself, not stdout
    from bnplctl.cli.output import prompt

    prompt(f"{label}: ")
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def _asked(value: str | None, option: str, label: str, *, secret: bool) -> str:
    """An option left out: asked at the terminal until answered with a valid value (checked
    as ``UserCreate`` checks the field the option names; the reason on a line of its own,
    then the question again), or the next line of a piped standard input, checked later
    with the rest. Input ending first (Ctrl-D) is a usage error, exit 2; Ctrl-C is an
    interruption, exit 130, as anywhere else."""
    import sys

    from bnplctl.cli.output import prompt
    from bnplctl.errors import MissingInput
    from bnplctl.schemas import user_field_problem

    if value is not None:
        return value
    ended = MissingInput(f"{option}: required (standard input ended before it was given)")
    if not _stdin_is_terminal():
        line = sys.stdin.readline() if sys.stdin is not None else ""  # None: stdin closed
        if not line:
            raise ended
        return line.rstrip("\r\n")
    while True:
        try:
            answer = _read_answer(label, secret=secret).rstrip("\r\n")
        except EOFError:
            prompt("\n")  # the message below goes on a line of its own
            raise ended from None
        except KeyboardInterrupt:
            prompt("\n")
            raise
        if not answer.strip():
            continue
        problem = user_field_problem(option.removeprefix("--"), answer)  # never the value
        if problem is None:
            return answer
        prompt(f"{problem}\n")


@app.command("import")
def import_(
    sources: FilesArgument,
    input_format: FormatOption = InputFormat.auto,
    rejects: Annotated[
        str | None,
        typer.Option(
            "--rejects",
            metavar="PATH",
            help="Write rejected rows (file, line, user_id, outcome, reason) here.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Report each row's outcome; onboard no one."),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Onboard users in batch: valid rows are applied, the rest reported (exit 5).

    Columns: user_id, name, phone, passport, card, dob. Several files are imported in
    turn, as one run: a row repeating a user of an earlier file is a duplicate naming
    that file and line. --dry-run checks the files against the database as a real run
    would, then rolls everything back.

    Example: bnplctl users import users.csv --rejects rejects.csv

    Example: bnplctl users import day1.csv day2.jsonl --dry-run -o json
    """
    from bnplctl.cli.batch import (
        check_inputs,
        finish_batch,
        note_what_stays,
        outcome_said,
        progress_size,
    )
    from bnplctl.cli.output import byte_progress, record_writer, warning
    from bnplctl.importing.batch import RejectsFile
    from bnplctl.importing.users import UserImportReport, import_users

    check_inputs(sources)
    rejects_file = RejectsFile(rejects, "user_id", sources) if rejects is not None else None
    # -o jsonl/csv: each row's outcome as its chunk is committed, in file order.
    streamed = output in (OutputFormat.jsonl, OutputFormat.csv)
    write_rows = record_writer(output, _ROW_OUTCOME) if streamed else None
    report = UserImportReport(sink=rejects_file, row_outcomes=write_rows)
    try:
        import_users(
            [(source, progress_size(source)) for source in sources],
            input_format=input_format.value,
            context=app_context(),
            dry_run=dry_run,
            warn=warning,
            report=report,
            progress=byte_progress,
        )
    except BaseException as exc:
        if not dry_run:  # the chunks inserted before the error stay, and their rejects
            note_what_stays(exc, report.rows, report.applied, "created")
        if rejects_file is not None:
            rejects_file.finish(failed=True)
        raise
    title = "Users import" + (" (dry run: nothing written)" if dry_run else "")
    several = len(sources) > 1
    with outcome_said(report, dry_run=dry_run):
        if write_rows is not None:
            write_rows([])  # a CSV's header, when no row came
        finish_batch(
            report,
            output,
            rejects=rejects_file,
            sources=sources,
            key_name="user_id",
            title=title,
            extra={"dry_run": dry_run}
            | ({"files": report.files} if output is OutputFormat.json else {}),
            created=None
            if streamed
            else [
                # A dry run creates no one: an id it would have generated names nothing.
                ({"file": report.names[index]} if several else {})
                | {"line": line, "user_id": None if user_id in report.generated else user_id}
                for index, lines in enumerate(report.created)
                for user_id, line in lines.items()
            ],
            rows_streamed=streamed,
        )


_ROW_OUTCOME = ("file", "line", "user_id", "outcome", "reason")


@app.command("list")
def list_(
    status: Annotated[
        UserStatus | None, typer.Option("--status", help="Only users in this status.")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            metavar="TEXT",
            help="A user id prefix, part of the name, or the phone's last four digits.",
        ),
    ] = None,
    card: Annotated[
        str | None,
        typer.Option(
            "--card",
            metavar="CARD",
            help="Users onboarded with this card (by its fingerprint under every enabled"
            " key; the number is never stored or shown). '-': read it from standard input.",
        ),
    ] = None,
    limit: LimitOption = None,
    every: AllOption = False,
    sort: Annotated[str | None, sort_option(USER_SORT)] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List users, masked, oldest first.

    Example: bnplctl users list --status DEBT_USER -o json

    Example: bnplctl users list --search karim --sort full_name

    Example: echo 4111111111111111 | bnplctl users list --card -
    """
    from bnplctl.cli.lists import list_request, report_cut
    from bnplctl.cli.output import render_list
    from bnplctl.services.users import list_users, public_user

    digits = _card_digits(card) if card is not None else None
    request = list_request(limit, every, sort)
    context = app_context()
    with context.db.unit() as work:  # rendered as the rows arrive
        session = work.session
        chosen = status
        fingerprints = None
        if digits is not None:
            from bnplctl.services.secret_key import checked_keyring

            keyring = checked_keyring(session, context.settings)
            fingerprints = keyring.card_fingerprints(digits)
        users = list_users(
            session, status=chosen, search=search, cards=fingerprints, request=request
        )
        shown = (public_user(user) for user in users)
        render_list(shown, output, columns=USER_LIST_COLUMNS, title="Users", drop=USER_DROP)
        report_cut(users)


def _card_digits(given: str) -> str:
    """The card number of ``users list --card`` (``-``: standard input's first line),
    checked as at onboarding; a bad one is a usage error that never shows it."""
    import sys

    from bnplctl import pii
    from bnplctl.errors import InvalidInput, UsageProblem

    if given == "-":
        given = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    try:
        return pii.normalize_card(given)
    except InvalidInput as exc:
        raise UsageProblem(f"--card: {exc.message.removeprefix('card: ')}") from None


@app.command("update")
def update(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="The user's id.")],
    name: Annotated[str | None, typer.Option("--name", help="The new full name.")] = None,
    phone: Annotated[
        str | None,
        typer.Option("--phone", help="The new phone, international format, e.g. +998901234567."),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Change a user's name or phone; prints the masked user.

    Each value is checked as at onboarding (exit 65, nothing changed). The audit
    event names the fields changed, never their values.

    Example: bnplctl users update usr-001 --phone +998901112233
    """
    from bnplctl.cli.context import current_actor
    from bnplctl.cli.output import message, render_one
    from bnplctl.errors import UsageProblem
    from bnplctl.schemas import UserUpdate, validated
    from bnplctl.services.users import public_user, update_user

    if name is None and phone is None:
        raise UsageProblem("nothing to change: give --name, --phone or both")
    given = {key: value for key, value in (("name", name), ("phone", phone)) if value is not None}
    change = validated(UserUpdate, given)
    with app_context().db.unit() as work:
        session = work.session
        user, changed = update_user(session, user_id, change, actor=current_actor())
        shown = public_user(user)
    if not changed:
        message(f"user {user_id}: nothing changed (the values are the ones on record)")
    render_one(shown, output, title=f"User {user_id}")


@app.command("show")
def show(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="The user's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """One user, masked, with their plans and debt summary.

    Example: bnplctl users show usr-001
    """
    from bnplctl.cli.output import render_one
    from bnplctl.services.user_summary import user_summary

    with app_context().db.unit(readonly=True) as work:
        connection = work.dbapi
        shown = user_summary(connection, user_id)
    render_one(shown, output, title=f"User {user_id}")
