"""The users import: the rows of one or more files in, per-row outcomes out, one
transaction per chunk.

Each file runs through the pipeline of every batch file (``batch.apply_chunks``): its
rows are validated and protected by worker processes (CPU-bound: validation,
encryption, hashing: the pipeline's ``prepare`` stage) while this process copies the
prepared chunks in and inserts them in file order (``services/onboarding.py``'s
statement), each chunk a transaction of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import IO, TYPE_CHECKING, Any

from bnplctl.errors import InvalidInput
from bnplctl.importing.batch import IngestReport, Rejected, chunked
from bnplctl.importing.readers import (
    CsvSlice,
    Format,
    HashingReader,
    RawRow,
    csv_slices,
    no_progress,
    read_rows,
)

if TYPE_CHECKING:
    from bnplctl.context import Context

USER_COLUMNS = ("name", "phone", "passport", "card", "dob")


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk validated and protected: COPY text, the staged keys, the invalid rows, and
    the places (``seq``) of the rows whose user_id was generated."""

    copy_text: str
    keys: list[tuple[int, str, str]]
    invalid: list[Rejected]
    generated: frozenset[int] = frozenset()
    primary_id: int = 0  # the key it was protected under
    prior_id: int | None = None  # the rotation's from key it was looked up under too


RowOutcome = dict[str, Any]


@dataclass
class UserImportReport(IngestReport):
    """A users import's outcomes (the first rows rejected, every one to the rejects
    file), and the users it created, for each file (by its place in ``names``): user_id
    -> line, in file order (naming the line a later duplicate repeats; a dict per file
    keeps 100,000 users' lines in small ints; ``generated``: the ids a dry run made up);
    ``files``: each file's summary, once it is done.
    ``row_outcomes``, when set, is given each committed chunk's rows in file order
    (``file``, ``line``, ``user_id``, ``outcome``, ``reason``): ``-o jsonl``/``csv``
    stream them."""

    outcomes: tuple[str, ...] = ("created", "duplicate", "invalid")
    applied_as: str = "created"
    created: list[dict[str, int]] = field(default_factory=list)
    generated: set[str] = field(default_factory=set)
    row_outcomes: Callable[[list[RowOutcome]], None] | None = None
    names: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    def created_by(self, user_id: str) -> tuple[int, int] | None:
        """The file (its place) and line that created ``user_id`` in this run, if any."""
        for index, lines in enumerate(self.created):
            line = lines.get(user_id)
            if line is not None:
                return index, line
        return None


def prepare_chunk(rows: list[RawRow], today: date, keyring: Any) -> PreparedChunk:
    """Validate and protect one chunk (pure CPU: runs in a worker process).

    A plainly valid row takes ``quick_user``; any other row, ``UserCreate.parse``, which
    gives its result or the canonical error message.
    """
    from bnplctl.services.onboarding import copy_line, new_user_id, protected_values
    from bnplctl.validators import quick_user, shown_id

    lines: list[str] = []
    keys: list[tuple[int, str, str]] = []
    invalid: list[Rejected] = []
    generated: set[int] = set()
    for row in rows:
        if row.error is not None:
            key = shown_id(row.fields.get("user_id"), row.fields.get("passport"))
            invalid.append(Rejected(row.line, key, "invalid", row.error))
            continue
        parsed = quick_user(row.fields, today)
        if parsed is None:
            from bnplctl.schemas import UserCreate  # pydantic: only for rows not plainly valid

            try:
                user = UserCreate.parse(row.fields, today)
            except InvalidInput as exc:
                key = shown_id(row.fields.get("user_id"), row.fields.get("passport"))
                invalid.append(Rejected(row.line, key, "invalid", exc.message))
                continue
            parsed = (user.user_id, user.name, user.phone, user.passport, user.card, user.dob)
        user_id, name, phone, passport, card, dob = parsed
        if user_id is None:
            generated.add(len(keys))
        values = protected_values(
            user_id or new_user_id(), name, phone, passport, card, dob, keyring
        )
        lines.append(copy_line(len(keys), values))
        keys.append((row.line, values[0], values[4]))
    return PreparedChunk(
        "".join(lines),
        keys,
        invalid,
        frozenset(generated),
        primary_id=keyring.primary_id,
        prior_id=keyring.prior_id,
    )


WorkItem = list[RawRow] | CsvSlice


def user_chunks(stream: IO[bytes], fmt: Format, chunk_rows: int) -> Iterator[WorkItem]:
    """The import's units of work: raw CSV slices (parsed by the workers), or row chunks."""
    if fmt == "csv":
        return csv_slices(stream, chunk_rows)
    return chunked(read_rows(stream, fmt, USER_COLUMNS), chunk_rows)


def prepare_item(work: tuple[WorkItem, Any], *, today: date) -> PreparedChunk:
    """A unit of work validated and protected (``prepare_chunk``) under the keyring it
    comes with (the import's latest, as it was when the chunk was read: a rotation that
    began meanwhile reaches the chunks read after it): the pipeline's ``prepare`` stage,
    run by its worker processes."""
    item, keyring = work
    rows = list(item.rows(USER_COLUMNS)) if isinstance(item, CsvSlice) else item
    return prepare_chunk(rows, today, keyring)


def import_users(
    files: list[tuple[str, int | None]],
    *,
    context: Context,
    input_format: str = "auto",
    source: str = "import",
    dry_run: bool = False,
    warn: Callable[[str], None] | None = None,
    report: UserImportReport | None = None,
    progress: Callable[[int | None, str], Any] = no_progress,
) -> UserImportReport:
    """Validate, protect and insert the users of each (file name, size for a progress
    bar or None), in turn, one transaction per chunk (a dry run: one transaction for all
    the files, rolled back, so that its outcomes are the real ones). The outcomes go to
    ``report`` (a new one by default), which after an error holds those of the chunks
    inserted before it; ``report.files``, each file's summary.

    Each file runs through the pipeline of every batch file (``batch.apply_chunks``),
    its chunks prepared (validation, encryption and hashing: CPU-bound) by worker
    processes, the pipeline's ``prepare`` stage, while this process copies the next
    prepared chunk in and inserts this one, in file order. The keyring (the settings'
    key file) is checked against the database (``services/secret_key.py``) before
    anything else (without a key file yet, one is generated if the database may have
    one), and the database's keys are read again in each chunk's transaction, under the
    shared keys lock, before its insert (``_Inserter.stage``); a database that has seen
    no key records it with the first chunk. The chunks have ``context.chunks.users``
    rows.
    """
    import functools

    from bnplctl.importing.batch import apply_chunks, ingest_each
    from bnplctl.services.secret_key import checked_keyring

    settings, database = context.settings, context.db
    settings.required_key_file()  # no key file to use: 78 before the database is reached
    # The keys the chunks are protected under, read first (the workers need them); a
    # database that has seen no key records it with the first chunk (``stage``).
    with database.unit(commit=False, raw=True) as work:
        keyring = checked_keyring(work.dbapi, settings, warn=warn, now=context.clock.now())
    report = report if report is not None else UserImportReport()
    prepare = functools.partial(prepare_item, today=context.clock.today())
    inserter = _Inserter(report, context=context, source=source, keyring=keyring, dry_run=dry_run)

    def one_file(name: str, items: Iterable[WorkItem], reader: HashingReader) -> dict[str, Any]:
        report.names.append(name)
        report.created.append({})
        before = Counter(report.counts)
        with_keys = ((item, inserter.keyring) for item in items)
        apply_chunks(
            database, with_keys, inserter.stage, inserter.apply, inserter.committed,
            dry_run=dry_run, prepare=prepare,
        )  # fmt: skip
        counts = report.counts - before
        summary = {"file": name, "sha256": reader.sha256.hexdigest(), "rows": counts.total()}
        return summary | {outcome: counts.get(outcome, 0) for outcome in report.outcomes}

    report.files = ingest_each(
        files, input_format, report, database=database, dry_run=dry_run, progress=progress,
        one_file=one_file,
        read=functools.partial(user_chunks, chunk_rows=context.chunks.users),
    )  # fmt: skip
    return report


Inserted = tuple[PreparedChunk, list[Any]]  # a chunk and its duplicates (``InsertOutcome``)


class _Inserter:
    """The pipeline's stages of a users chunk prepared: ``stage`` copies it in and reads
    the database's keys under the shared keys lock (a chunk protected under another key
    than the database's primary now, a rotation having started meanwhile, is re-protected
    here: ``rekeyed``), ``apply`` inserts it, ``committed`` records its outcomes."""

    def __init__(
        self,
        report: UserImportReport,
        *,
        context: Context,
        source: str,
        keyring: Any,
        dry_run: bool = False,
    ) -> None:
        self.report = report
        self.settings, self.clock, self.actor = context.settings, context.clock, context.acting
        self.source, self.keyring = source, keyring
        self.dry_run = dry_run
        self.expect_new = True  # until a chunk meets a duplicate

    def stage(self, connection: Any, prepared: PreparedChunk) -> PreparedChunk:
        from bnplctl.services.onboarding import copy_staged
        from bnplctl.services.secret_key import checked_keyring, write_state

        if not prepared.keys:
            return prepared
        copy_staged(connection, prepared.copy_text)
        if write_state(connection) != self.keyring.state():
            self.keyring = checked_keyring(connection, self.settings, now=self.clock.now())
        if (prepared.primary_id, prepared.prior_id) != self.keyring.state():
            from bnplctl.services.onboarding import rekey_staged

            keys = rekey_staged(
                connection, self.keyring, prepared.keys, reader=self._reader(prepared)
            )
            prepared = replace(
                prepared,
                keys=keys,
                primary_id=self.keyring.primary_id,
                prior_id=self.keyring.prior_id,
            )
        return prepared

    def _reader(self, prepared: PreparedChunk) -> Any:
        """What decrypts a chunk this import protected: the keyring, or, when the key it
        was protected under has been retired since (it reached no row), every key of
        the file, for that alone."""
        from bnplctl import crypto

        if prepared.primary_id in self.keyring.keys:
            return self.keyring
        found = crypto.read_keyring(self.settings.required_key_file())
        every = {entry.key_id: entry.material for entry in (found.entries if found else ())}
        return crypto.Keyring(every, self.keyring.primary_id) if every else self.keyring

    def apply(self, connection: Any, prepared: PreparedChunk) -> Inserted:
        from bnplctl.services.onboarding import insert_copied

        duplicates = insert_copied(
            connection,
            prepared.keys,
            now=self.clock.now(),
            actor=self.actor,
            source=self.source,
            expect_new=self.expect_new,
        )
        self.expect_new = not duplicates
        return prepared, duplicates

    def committed(self, inserted: Inserted) -> None:
        _record(self.report, *inserted, dry_run=self.dry_run)


def _record(
    report: UserImportReport, prepared: PreparedChunk, duplicates: list[Any], *, dry_run: bool
) -> None:
    """A committed chunk's outcomes: its created users (in file order), its invalid rows
    and its duplicates, each naming what it duplicates: an earlier line of this run when
    that line created the user (and its file, when it was another), else the stored
    user. A generated id is never a duplicate's key (it names nothing the operator
    knows)."""
    from bnplctl.importing.readers import input_label
    from bnplctl.services.onboarding import duplicate_reason

    refused = {outcome.seq for outcome in duplicates}
    created: list[tuple[int, str]] = []
    created_here = report.created[report.file_index]
    for seq, (line, user_id, _) in enumerate(prepared.keys):
        if seq not in refused:
            created_here[user_id] = line
            created.append((line, user_id))
            if dry_run and seq in prepared.generated:
                report.generated.add(user_id)
    not_applied = list(prepared.invalid)
    for outcome in duplicates:
        earlier = report.created_by(outcome.duplicate_of) if outcome.duplicate_of else None
        file = None
        if earlier is not None and earlier[0] != report.file_index:
            file = input_label(report.names[earlier[0]])
        reason = duplicate_reason(
            outcome.same or "passport",
            user_id=outcome.duplicate_of,
            line=earlier[1] if earlier is not None else None,
            file=file,
        )
        key = "" if outcome.seq in prepared.generated else outcome.user_id
        not_applied.append(Rejected(outcome.line, key, "duplicate", reason))
    not_applied.sort(key=lambda item: item.line)
    report.add_chunk(len(created), not_applied)
    if report.row_outcomes is not None:
        rows: list[RowOutcome] = [
            {"file": report.file, "line": line,
             "user_id": None if user_id in report.generated else user_id,
             "outcome": "created", "reason": ""}
            for line, user_id in created
        ]  # fmt: skip
        rows += [
            {"file": report.file, "line": item.line, "user_id": item.key,
             "outcome": item.outcome, "reason": item.reason}
            for item in not_applied
        ]  # fmt: skip
        rows.sort(key=lambda row: row["line"])
        report.row_outcomes(rows)
