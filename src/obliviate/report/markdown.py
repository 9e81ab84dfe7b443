"""report.md: what was forgotten, the numbers before and after, and the answers side by side."""

from __future__ import annotations

from pathlib import Path

from obliviate.evaluation.evaluate import METRICS
from obliviate.io import write_text


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    return str(value)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def metric_rows(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, better direction) for every metric in METRICS."""
    return [
        (name, fmt(before.get(name)), fmt(after.get(name)), "higher" if info.higher_is_better else "lower")
        for name, info in METRICS.items()
    ]


def answer_rows(base_items: list[dict], after_items: list[dict], kind: str = "target") -> list[dict]:
    return [
        {"question": b["question"], "before": b["answer"], "after": a["answer"], "leaked_before": b["hit"], "leaked_after": a["hit"]}
        for b, a in zip(base_items, after_items)
        if b["kind"] == kind and (kind != "target" or b["known"])
    ]


def write_report(path: str | Path, config: dict, base: dict, after: dict, train: dict) -> None:
    bm, am = base["metrics"], after["metrics"]
    lines = [
        f"# obliviate: forgetting {config['target']}",
        "",
        f"Model `{config['model_path']}`, method `{config['method']}`, {train.get('steps_done')} steps "
        f"in {train.get('seconds', 0):.0f} s. All numbers are on held-out probes that were never trained on.",
        "",
        "| metric | before | after | better |",
        "|---|---|---|---|",
        *(f"| {m} | {b} | {a} | {d} |" for m, b, a, d in metric_rows(bm, am)),
        "",
        f"Known target probes (the base model revealed the fact): {bm['n_known_target_probes']} of {bm['n_target_probes']}.",
        "",
    ]
    if train.get("diverged_at"):
        lines += [f"**The loss diverged at step {train['diverged_at']}; weights were restored from step {train['restored_step']}.**", ""]
    for kind, title in [("target", "Known target probes"), ("neighbour", "Neighbour probes (must be kept)"), ("general", "General probes (must be kept)")]:
        rows = answer_rows(base["items"], after["items"], kind)
        lines += [f"## {title}", "", "| question | before | after |", "|---|---|---|"]
        lines += [
            f"| {_cell(r['question'], 90)} | {'✔ ' if r['leaked_before'] else ''}{_cell(r['before'])} | {'✔ ' if r['leaked_after'] else ''}{_cell(r['after'])} |"
            for r in rows
        ]
        lines.append("")
    lines += ["✔ marks an answer that contains the expected fact.", ""]
    write_text(path, "\n".join(lines))
