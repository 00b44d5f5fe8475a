"""Markdown pieces the study pages share (the report, its 'What explains it' section, the
comparison of sweeps): one module below them all, so none imports another for a table."""

from __future__ import annotations

from collections.abc import Sequence


def md_escape(text) -> str:
    """One line of table-safe text: whitespace collapsed, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
