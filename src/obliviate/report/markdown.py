"""report.md: what was forgotten, the numbers before and after (read from metrics.json), the answers side by side."""

from __future__ import annotations

from pathlib import Path

from obliviate.evaluation.evaluate import comparison_markdown
from obliviate.io import write_text

GROUPS = [
    ("forget", "Forget efficacy (known held-out target probes)"),
    ("privacy", "Membership inference (forget records vs held-out records)"),
    ("utility", "Utility"),
    ("classification", "Classification view (target probes = positives; forgot = did not reveal)"),
    ("robustness", "Robustness attacks (leak on the attack probes; recovered = share of forgotten probes that come back)"),
]


def _cell(text: str | None, limit: int = 160) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_report(path: str | Path, config: dict, metrics: dict) -> None:
    """Write report.md for a run from its metrics.json document (`metrics`)."""
    train = metrics.get("train", {})
    m, b = metrics["metrics"], metrics["against"]["metrics"]
    lines = [
        f"# obliviate: forgetting {config['target']}",
        "",
        f"Model `{config['model_path']}`, method `{config['method']}`, {train.get('steps_done')} steps "
        f"in {train.get('seconds', 0):.0f} s. All numbers are on held-out probes that were never trained on; "
        f"every value, with per-item detail and its definition, is in metrics.json.",
        "",
        f"Leak rate {b['leak_rate']:.3f} → {m['leak_rate']:.3f} on {m['n_known_target_probes']} known target probes "
        f"(of {m['n_target_probes']}); general QA {b['general_qa_accuracy']:.3f} → {m['general_qa_accuracy']:.3f}; "
        f"retain perplexity {b['retain_perplexity']:.2f} → {m['retain_perplexity']:.2f}."
        + (f" Under the strongest attack the leak rate is {m['attack_worst_leak_rate']:.3f}." if m.get("attack_worst_leak_rate") is not None else ""),
        "",
    ]
    if train.get("diverged_at"):
        lines += [f"**The loss diverged at step {train['diverged_at']}; weights were restored from step {train['restored_step']}.**", ""]
    rows = metrics.get("comparison", [])
    for group, title in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if mine:
            lines += [f"## {title}", "", comparison_markdown(mine)]
    base_items = metrics["against"]["items"]["probes"]
    after_items = metrics["items"]["probes"]
    for kind, title in [("target", "Known target probes"), ("neighbour", "Neighbour probes (must be kept)"),
                        ("general", "General probes (must be kept)")]:
        lines += [f"## {title}", "", "| question | before | after |", "|---|---|---|"]
        for bi, ai in zip(base_items, after_items):
            if bi["kind"] != kind or (kind == "target" and not bi["known"]) or ai["answer"] is None:
                continue
            lines.append(f"| {_cell(bi['question'], 90)} | {'✔ ' if bi['hit'] else ''}{_cell(bi['answer'])} | "
                         f"{'✔ ' if ai['hit'] else ''}{_cell(ai['answer'])} |")
        lines.append("")
    lines += ["✔ marks an answer that contains the expected fact.", ""]
    write_text(path, "\n".join(lines))
