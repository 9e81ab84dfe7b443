"""report.md: what was forgotten, the numbers before and after (read from metrics.json), the answers side by side."""

from __future__ import annotations

from pathlib import Path

from obliviate.io import write_text
from obliviate.report.format import cell, markdown_table, num
from obliviate.report.metrics import comparison_markdown

GROUPS = [
    ("forget", "Forget efficacy (known held-out target probes)"),
    ("privacy", "Membership inference (forget records vs held-out records)"),
    ("utility", "Utility"),
    ("classification", "Classification view (target probes = positives; forgot = did not reveal)"),
    ("robustness",
     "Robustness attacks (leak on the attack probes; recovered = share of forgotten probes that come back)"),
]


def write_report(path: str | Path, config: dict, metrics: dict) -> None:
    """Write report.md for a run from its metrics.json document (`metrics`)."""
    train = metrics.get("train", {})
    m, b = metrics["metrics"], metrics["against"]["metrics"]
    worst = m.get("attack_worst_leak_rate")
    lines = [
        f"# obliviate: forgetting {config['target']}",
        "",
        f"Model `{config['model_path']}`, method `{config['method']}`, {train.get('steps_done')} steps "
        f"in {num(train.get('seconds', 0), 0)} s. All numbers are on held-out probes that were never trained on; "
        f"every value, with per-item detail and its definition, is in metrics.json.",
        "",
        f"Leak rate {num(b['leak_rate'])} → {num(m['leak_rate'])} on {m['n_known_target_probes']} known target "
        f"probes (of {m['n_target_probes']}); general QA {num(b['general_qa_accuracy'])} → "
        f"{num(m['general_qa_accuracy'])}; "
        f"retain perplexity {num(b['retain_perplexity'], 2)} → {num(m['retain_perplexity'], 2)}."
        + (f" Under the strongest attack the leak rate is {num(worst)}." if worst is not None else ""),
        "",
    ]
    if train.get("diverged_at"):
        lines += [f"**The loss diverged at step {train['diverged_at']}; weights were restored from step "
                  f"{train['restored_step']}.**", ""]
    rows = metrics.get("comparison", [])
    for group, title in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if mine:
            lines += [f"## {title}", "", comparison_markdown(mine)]
    base_items = metrics["against"]["items"]["probes"]
    after_items = metrics["items"]["probes"]
    for kind, title in [("target", "Known target probes"), ("neighbour", "Neighbour probes (must be kept)"),
                        ("general", "General probes (must be kept)")]:
        rows = [(cell(bi["question"], 90), f"{'✔ ' if bi['hit'] else ''}{cell(bi['answer'])}",
                 f"{'✔ ' if ai['hit'] else ''}{cell(ai['answer'])}")
                for bi, ai in zip(base_items, after_items)
                if bi["kind"] == kind and (kind != "target" or bi["known"]) and ai["answer"] is not None]
        lines += [f"## {title}", "", markdown_table(("question", "before", "after"), rows)]
    lines += ["✔ marks an answer that contains the expected fact.", ""]
    write_text(path, "\n".join(lines))
