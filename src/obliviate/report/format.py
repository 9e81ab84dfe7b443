"""Numbers and tables as text: the one set of formatters for reports, docs and the command line."""

from __future__ import annotations


def fmt(value) -> str:
    """A metric value: "n/a" for None, 3 decimals below 10, 2 from 10 on, other values as str."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def num(value, digits: int = 3) -> str:
    """A number with a fixed count of decimals, "n/a" for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def signed(value) -> str:
    """A change: signed, 3 decimals below 10, 2 from 10 on; "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if abs(value) < 10 else f"{value:+.2f}"


def cell(text: str | None, limit: int = 160) -> str:
    """Free text as one markdown table cell: whitespace folded, pipes escaped, cut to `limit` characters."""
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(columns, rows) -> str:
    """A markdown table from column names and rows of cells (already text)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
