"""The portfolio report as one self-contained HTML file (``debt report --html``).

Charts are drawn by matplotlib as inline SVG with their text as paths, tables are plain
HTML, the style sheet is inline: the file fetches no font, script, style sheet or
image, so it opens the same from a mail attachment or an air-gapped machine. matplotlib
is imported here only (it takes about half a second to load). Amounts are drawn from
their strings; a float is only ever a bar's height.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnplctl.errors import OutputError
    from bnplctl.outfile import OutputFile

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1f2933; background: #fff; max-width: 1100px; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
.meta { color: #52606d; margin-top: 0; }
.figures { display: flex; gap: 1rem; flex-wrap: wrap; }
.figure { border: 1px solid #d9e2ec; border-radius: 6px; padding: 0.6rem 1rem; }
.figure b { display: block; font-size: 1.3rem; }
table { border-collapse: collapse; margin-top: 0.5rem; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #e4e7eb; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
svg { max-width: 100%; height: auto; }
.empty { color: #7b8794; font-style: italic; }
"""
_BLUE, _RED, _GREEN, _ORANGE = "#2f6fb0", "#c2412d", "#2f8a57", "#d9822b"


def render(report: dict[str, Any], *, currency: str | None, generated_at: str) -> str:
    """The whole HTML document of ``services.portfolio.portfolio``'s ``report``."""
    unit = f" ({currency})" if currency else ""
    aging = report["aging"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>bnplctl portfolio report {_e(report['business_date'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Portfolio report</h1>",
        f'<p class="meta">Business date {_e(report["business_date"])}; generated'
        f" {_e(generated_at)} by bnplctl.</p>",
        '<div class="figures">',
        _figure("Overdue" + unit, aging["total_amount"]),
        _figure("Overdue installments", str(aging["total_installments"])),
        _figure("Users in debt (overdue)", str(aging["total_users"])),
        "</div>",
        "<h2>Aging of overdue installments</h2>",
        _aging_chart(aging["buckets"], unit),
        _table(
            ["days overdue", "users", "installments", "amount" + unit],
            [
                [b["bucket"], str(b["users"]), str(b["installments"]), b["amount"]]
                for b in aging["buckets"]
            ],
        ),
        "<h2>Debt over the last sweeps</h2>",
        _sweeps_chart(report["sweeps"], unit),
        "<h2>Payments and refunds per day</h2>",
        _days_chart(report["days"], unit),
        "<h2>Largest debtors</h2>",
        _table(
            ["user", "phone (masked)", "overdue" + unit, "installments", "overdue since"],
            [
                [
                    d["user_id"],
                    d["phone_number"],
                    d["overdue_amount"],
                    str(d["installments"]),
                    d["overdue_since"] or "",
                ]
                for d in report["largest_debtors"]
            ],
            empty="No user has an overdue installment.",
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def open_target(path: str | Path) -> OutputFile:
    """The report's file, opened beside its target (the file a link names) before any
    work is done, so that an unwritable place is exit 74, naming the path, before
    anything is printed."""
    from bnplctl.outfile import OutputFile

    try:
        return OutputFile(path, suffix=".tmp", option="--html")
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def write(path: str | Path, document: str, output: OutputFile | None = None) -> None:
    """Write the document into ``output`` (opened by :func:`open_target`, else now), then
    rename it into place: a reader never sees half a report (``bnplctl.outfile``)."""
    output = output if output is not None else open_target(path)
    try:
        try:
            output.handle.write(document)
        except OSError:
            output.abandon()
            raise
        output.put_in_place()
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def _cannot_write(path: str | Path, exc: OSError) -> OutputError:
    from bnplctl.errors import OutputError

    return OutputError(f"cannot write the report to {path} ({exc.strerror or type(exc).__name__})")


# --- pieces ------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _figure(label: str, value: str) -> str:
    return f'<div class="figure">{_e(label)}<b>{_e(value)}</b></div>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str = "") -> str:
    if not rows and empty:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(cell)}</td>' if _numeric(cell) else f"<td>{_e(cell)}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).isdigit()


def _new_figure(width: float = 9.0, height: float = 3.2) -> Any:
    import matplotlib

    matplotlib.use("svg")
    matplotlib.rcParams["svg.fonttype"] = "path"  # text as outlines: no font to fetch
    matplotlib.rcParams["svg.hashsalt"] = "bnplctl"  # the same report, the same ids
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # no XML declaration or doctype inside HTML
    # Nor the RDF metadata block: it names vocabularies by URL, and says nothing a reader needs.
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)


def _aging_chart(buckets: Sequence[dict[str, Any]], unit: str) -> str:
    figure = _new_figure()
    axes = figure.add_subplot()
    names = [b["bucket"] for b in buckets]
    heights = [float(b["amount"]) for b in buckets]
    bars = axes.bar(names, heights, color=[_ORANGE, _RED, _RED, "#7a1f12"])
    labels = [f"{b['amount']}\n{b['users']} user{'' if b['users'] == 1 else 's'}" for b in buckets]
    axes.bar_label(bars, labels=labels, fontsize=8)
    axes.set_xlabel("days overdue")
    axes.set_ylabel("overdue" + unit)
    axes.margins(y=0.25)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def _sweeps_chart(sweeps: Sequence[dict[str, Any]], unit: str) -> str:
    if not sweeps:
        return '<p class="empty">No sweep has been recorded yet.</p>'
    figure = _new_figure()
    axes = figure.add_subplot()
    dates = [s["business_date"] for s in sweeps]
    axes.plot(dates, [float(s["overdue_amount"]) for s in sweeps], color=_RED, marker="o")
    axes.set_ylabel("overdue" + unit, color=_RED)
    users = axes.twinx()
    users.plot(dates, [s["debt_users"] for s in sweeps], color=_BLUE, marker="s")
    users.set_ylabel("users in debt", color=_BLUE)
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes.set_ylim(bottom=0)
    users.set_ylim(bottom=0)
    return _svg(figure)


def _days_chart(days: Sequence[dict[str, Any]], unit: str) -> str:
    figure = _new_figure()
    axes = figure.add_subplot()
    positions = range(len(days))
    axes.bar(
        [p - 0.2 for p in positions],
        [float(d["payments_amount"]) for d in days],
        width=0.4,
        color=_GREEN,
        label="payments",
    )
    axes.bar(
        [p + 0.2 for p in positions],
        [float(d["refunds_amount"]) for d in days],
        width=0.4,
        color=_BLUE,
        label="refunds completed",
    )
    axes.set_xticks(list(positions), [d["date"][5:] for d in days], rotation=60, fontsize=7)
    axes.set_ylabel("amount" + unit)
    axes.legend(frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)
