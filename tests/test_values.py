"""Values at the edges (issue 28): ids that must not hold personal data, the phone kept
out of the server's statement log, dates at the ends of time, bidi controls, and the
split rule's message."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Cli


def test_a_split_whose_last_installment_would_be_nothing_says_the_real_rule(cli: Cli) -> None:
    # 2.76 / 24 = 0.115, rounded half-up to 0.12: 23 of them take the whole 2.76, although
    # 2.76 holds a cent for every installment (276 cents for 24 of them).
    result = cli("plans", "preview", "--amount", "2.76", "--installments", "24")

    assert result.exit_code == 65, result.stderr
    assert "the first 23 are 0.12 each" in result.stderr
    assert "leaves 0.00 for the last one" in result.stderr
    # 0.05 in 24: fewer cents than installments, the first ones would be 0.00.
    tiny = cli("plans", "preview", "--amount", "0.05", "--installments", "24")
    assert tiny.exit_code == 65 and "the first 23 would be 0.00 each" in tiny.stderr
    # 2.87 in 24: 23 of 0.12 and a last one of 0.11.
    fits = cli("plans", "preview", "--amount", "2.87", "--installments", "24", "-o", "csv")
    assert fits.exit_code == 0 and fits.stdout.count("0.12") == 23 and "0.11" in fits.stdout


def test_the_docs_state_the_split_rule_the_code_applies() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "commands.md").read_text()

    assert "too small to\ngive every installment at least one cent" not in docs
    assert "2.76 in 24" in docs
