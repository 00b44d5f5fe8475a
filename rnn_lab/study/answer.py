"""The report's first section: the study's question and, claim by claim, its answer.

`answer_md` writes `## Answer`: the question, the expectation as declared, a tally per kind,
then one line per claim (verdict, kind, sentence, numbers with their CI, seeds for / against /
failed), failed expectations first, then the other expectations, the reproductions and the
consistency checks, each in declaration order; claims and seeds declared after the results are
marked (rnn_lab.study.declaration). `rnn-lab study` prints the same block when it ends
(`answer_block` reads it back from report.md).
"""

from __future__ import annotations

from rnn_lab.study.claims import CONSISTENCY, EXPECTATION, FAILS, seeds_text, tally_text
from rnn_lab.study.declaration import Review

ANSWER_HEADING = "## Answer"


def _kind_rank(kind: str) -> int:
    return {EXPECTATION: 0, CONSISTENCY: 2}.get(kind, 1)


def ordered_rows(rows: list[dict]) -> list[dict]:
    """Failed expectations, other expectations, reproductions, consistency checks."""
    return sorted(
        rows,
        key=lambda r: (
            not (r["kind"] == EXPECTATION and r["verdict"] == FAILS),
            _kind_rank(r["kind"]),
            r["claim"],
        ),
    )


def claim_line(row: dict) -> str:
    late = " *(declared after the results)*" if row.get("declared_before_results") is False else ""
    reason = f" — {row['reason']}" if row.get("reason") else ""
    return (
        f"- **{row['verdict']}** ({row['kind']}, claim {row['claim']}) {row['sentence']}{late} "
        f"Numbers: {row['numbers']}; {seeds_text(row)}{reason}"
    )


def answer_md(settings: dict, rows: list[dict], review: Review | None = None) -> list[str]:
    """The `## Answer` section (see the module's docstring)."""
    out = [f"{ANSWER_HEADING}\n"]
    if settings.get("question"):
        out.append(f"**Question.** {_one_line(settings['question'])}\n")
    if settings.get("expect"):
        out.append(f"**Expected (as declared).** {_one_line(settings['expect'])}\n")
    if not rows:
        out.append(
            "This study declares no claims, so nothing here is judged: read its tables and "
            "comparisons below.\n"
        )
        return out
    out.append(f"{len(rows)} claim{'s' if len(rows) > 1 else ''}: {tally_text(rows)}.\n")
    out += [claim_line(row) for row in ordered_rows(rows)]
    late_seeds = (review.late_seeds if review else None) or []
    if late_seeds:
        seeds = ", ".join(str(s["seed"]) for s in late_seeds)
        out.append(f"\nSeeds added after the results: {seeds} (see Pre-registration).")
    out.append("")
    return out


def answer_block(report_text: str) -> str:
    """The `## Answer` section of a report.md, heading included ("" when it has none)."""
    if f"\n{ANSWER_HEADING}\n" not in f"\n{report_text}":
        return ""
    after = f"\n{report_text}".split(f"\n{ANSWER_HEADING}\n", 1)[1]
    return f"{ANSWER_HEADING}\n" + after.split("\n## ", 1)[0].rstrip() + "\n"


def _one_line(text) -> str:
    return " ".join(str(text).split())
