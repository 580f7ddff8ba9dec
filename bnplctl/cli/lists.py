"""What every list command shares: the ``--limit``/``--all``/``--sort`` request, and
the stderr hint when a list was cut."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bnplctl.errors import UsageProblem

if TYPE_CHECKING:
    from bnplctl.services.listing import ListRequest, Page


def list_request(limit: int | None, every: bool, sort: str | None) -> ListRequest:
    """The options as one request; ``--all`` with ``--limit`` is a usage error."""
    from bnplctl.cli.options import MAX_LIMIT
    from bnplctl.services.listing import DEFAULT_LIMIT, ListRequest

    if every and limit is not None:
        raise UsageProblem("--all and --limit: give one of them")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise UsageProblem(f"--limit: a whole number from 1 to {MAX_LIMIT}")
    return ListRequest(limit=None if every else (limit or DEFAULT_LIMIT), sort=sort)


def report_cut(page: Page[Any]) -> None:
    """``showing 100 of 249; use --all or --limit`` on stderr, when the list was cut."""
    if page.cut:
        from bnplctl.cli.output import message

        message(f"showing {page.limit} of {page.total()}; use --all or --limit")
