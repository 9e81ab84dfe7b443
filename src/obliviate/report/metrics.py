"""metrics.md: an evaluation's metrics.json as tables, and the writing of both files."""

from __future__ import annotations

from pathlib import Path

from obliviate.io import write_json, write_text
from obliviate.report.format import fmt, markdown_table, signed

BETTER = {True: "yes", False: "no", None: "-"}
DIRECTION = {True: "higher", False: "lower", None: "-"}


def comparison_markdown(rows: list[dict]) -> str:
    """The before/after table of a document's `comparison` rows."""
    return markdown_table(
        ("metric", "group", "before", "after", "change", "better?"),
        [
            (r["metric"], r["group"], fmt(r["before"]), fmt(r["after"]), signed(r["change"]), BETTER[r["better"]])
            for r in rows
        ],
    )


def metrics_markdown(doc: dict) -> str:
    """A human-readable metrics.md: the before/after table, or the values alone."""
    head = [f"# Evaluation of `{doc['model']['path']}` on {doc['data']['target']}", ""]
    if "comparison" in doc:
        base = doc["against"].get("model", {}).get("path")
        head += [f"Against `{base}`.", "", comparison_markdown(doc["comparison"])]
    else:
        info = doc["metric_info"]
        rows = [
            (k, info.get(k, {}).get("group", "-"), fmt(v), DIRECTION[info.get(k, {}).get("higher_is_better")])
            for k, v in doc["metrics"].items()
        ]
        head.append(markdown_table(("metric", "group", "value", "better"), rows).removesuffix("\n"))
    return "\n".join(head) + "\n"


def write_metrics(out: str | Path, doc: dict) -> None:
    """OUT/metrics.json (the document) and OUT/metrics.md (`metrics_markdown`), each written atomically."""
    out = Path(out)
    write_json(out / "metrics.json", doc)
    write_text(out / "metrics.md", metrics_markdown(doc))
