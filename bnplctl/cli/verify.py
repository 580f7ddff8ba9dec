"""``bnplctl verify``: rule 9's invariants, checked."""

from typing import Annotated

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import LogFileOption, OutputFormat, OutputOption
from bnplctl.errors import ExitCode


def verify(
    output: OutputOption = OutputFormat.table,
    log_file: LogFileOption = None,
    keys: Annotated[
        bool,
        typer.Option(
            "--keys",
            help="Also decrypt every passport: its key id known, its row binding and its"
            " blind index hold (check passport_keys; needs the key file).",
        ),
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            metavar="N",
            help="With --keys: N passports chosen at random instead of every one.",
        ),
    ] = None,
) -> None:
    """Check rule 9's invariants over the whole database, set-based.

    debt_status, plan_status, plan_totals, refund_cuts, refund_amounts and amounts,
    each with its number of violations and up to 10 offending ids; with --keys,
    passport_keys too (a flipped byte, a ciphertext copied from another row, an unknown
    key id, a blind index that is not the passport's). Exit 0 when every check holds, 69
    otherwise. For cron, after the nightly sweep.

    Example: bnplctl verify -o json
    """
    from bnplctl.cli.context import log_to
    from bnplctl.cli.output import error, render_list, render_one
    from bnplctl.services.verify import report, schema_and_checks

    if sample is not None:
        from bnplctl.errors import UsageProblem

        if not keys:
            raise UsageProblem("--sample goes with --keys: it samples the passports decrypted")
        if sample < 1:
            raise UsageProblem("--sample: N must be 1 or more")
    log_to(log_file, "verify")
    key_check = None
    with app_context().db.unit(commit=False) as work:
        connection = work.connection
        missing, results = schema_and_checks(connection)
        if keys and not missing:
            from bnplctl.services.keys import verify_keys
            from bnplctl.services.secret_key import checked_keyring

            keyring = checked_keyring(work.dbapi, app_context().settings)
            key_check = verify_keys(work.dbapi, keyring, sample=sample)
    if missing:
        if output in (OutputFormat.json, OutputFormat.jsonl) or log_file is not None:
            render_one({"ok": False, "missing_tables": missing, "checks": []}, output)
        tables = "table" + ("s" if len(missing) > 1 else "")
        error(
            f"the schema lacks the {tables} {', '.join(missing)}: the invariants cannot be checked"
        )
        raise typer.Exit(ExitCode.UNHEALTHY)
    shown = report(results)
    if key_check is not None:
        shown["checks"].append(key_check)
        shown["ok"] = shown["ok"] and not key_check["violations"]
    if output in (OutputFormat.json, OutputFormat.jsonl) or log_file is not None:
        render_one(shown, output)
    else:
        rows = [check | {"examples": " ".join(check["examples"])} for check in shown["checks"]]
        render_list(rows, output, columns=("check", "violations", "examples"), title="Rule 9")
    if not shown["ok"]:
        broken = [check["check"] for check in shown["checks"] if check["violations"]]
        error(f"invariants broken: {', '.join(broken)}")
        raise typer.Exit(ExitCode.UNHEALTHY)
