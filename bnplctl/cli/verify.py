"""``bnplctl verify``: rule 9's invariants, checked."""

import typer

from bnplctl.cli.context import app_context
from bnplctl.cli.options import LogFileOption, OutputFormat, OutputOption
from bnplctl.errors import ExitCode


def verify(output: OutputOption = OutputFormat.table, log_file: LogFileOption = None) -> None:
    """Check rule 9's invariants over the whole database, set-based.

    debt_status, plan_status, plan_totals, refund_cuts, refund_amounts and amounts,
    each with its number of violations and up to 10 offending ids. Exit 0 when every
    check holds, 69 otherwise. For cron, after the nightly sweep.

    Example: bnplctl verify -o json
    """
    from bnplctl.cli.context import log_to
    from bnplctl.cli.output import error, render_list, render_one
    from bnplctl.services.verify import report, schema_and_checks

    log_to(log_file, "verify")
    with app_context().db.unit(commit=False) as work:
        connection = work.connection
        missing, results = schema_and_checks(connection)
    if missing:
        if output in (OutputFormat.json, OutputFormat.jsonl) or log_file is not None:
            render_one({"ok": False, "missing_tables": missing, "checks": []}, output)
        tables = "table" + ("s" if len(missing) > 1 else "")
        error(
            f"the schema lacks the {tables} {', '.join(missing)}: the invariants cannot be checked"
        )
        raise typer.Exit(ExitCode.UNHEALTHY)
    shown = report(results)
    if output in (OutputFormat.json, OutputFormat.jsonl) or log_file is not None:
        render_one(shown, output)
    else:
        rows = [check | {"examples": " ".join(check["examples"])} for check in shown["checks"]]
        render_list(rows, output, columns=("check", "violations", "examples"), title="Rule 9")
    if not shown["ok"]:
        broken = [check["check"] for check in shown["checks"] if check["violations"]]
        error(f"invariants broken: {', '.join(broken)}")
        raise typer.Exit(ExitCode.UNHEALTHY)
