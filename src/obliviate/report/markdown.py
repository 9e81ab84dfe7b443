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
    (
        "robustness",
        "Robustness attacks (leak on the attack probes; recovered = share of forgotten probes that come back)",
    ),
]


def write_report(path: str | Path, config: dict, metrics: dict) -> None:
    """Write report.md for a run from its metrics.json document (`metrics`)."""
    train = metrics.get("train", {})
    m, b = metrics["metrics"], metrics["against"]["metrics"]
    worst = m.get("attack_worst_leak_rate")
    lines = [
        f"# obliviate: forgetting {config['target']}",
        "",
        f"Model `{config['model_path']}`, method `{metrics.get('chosen_method') or config['method']}`"
        f"{' (chosen by --method auto)' if train.get('auto') else ''}, {train.get('steps_done')} steps "
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
        lines += [
            f"**The loss diverged at step {train['diverged_at']}; weights were restored from step "
            f"{train['restored_step']}.**",
            "",
        ]
    auto = train.get("auto")
    if auto:
        verdict = (
            "it meets the bar" if auto["met_bar"] else "no candidate met the bar, so it is the one that missed it least"
        )
        bar = auto["bar"]
        lines += [
            "## How the method was chosen (`--method auto`)",
            "",
            f"Each candidate was trained from the base model and evaluated on the validation probes only "
            f"(the numbers below); the held-out evaluation probes were read once, for the chosen one. The bar: "
            f"leak cut at least {bar['leak_cut']:.0%}, neighbour QA down at most {bar['neighbour_qa_drop']:.2f}, "
            f"general QA down at most {bar['general_qa_drop']:.2f}, retain perplexity up at most "
            f"{bar['ppl_rise']:.0%}"
            + (f", leak after relearning at most {bar['relearn_leak']:.2f}" if "relearn_leak" in bar else "")
            + (
                f", refusals on neighbour and general probes up at most {bar['refusal_rise']:.2f}"
                if "refusal_rise" in bar
                else ""
            )
            + "; among candidates that meet it, the lowest leak after relearning wins. "
            f"Chosen: `{auto['chosen']}`: {verdict}.",
            "",
            candidates_markdown(auto),
        ]
    rows = metrics.get("comparison", [])
    for group, title in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if mine:
            lines += [f"## {title}", "", comparison_markdown(mine)]
    base_items = metrics["against"]["items"]["probes"]
    after_items = metrics["items"]["probes"]
    for kind, title in [
        ("target", "Known target probes"),
        ("neighbour", "Neighbour probes (must be kept)"),
        ("general", "General probes (must be kept)"),
    ]:
        rows = [
            (
                cell(bi["question"], 90),
                f"{'✔ ' if bi['hit'] else ''}{cell(bi['answer'])}",
                f"{'✔ ' if ai['hit'] else ''}{cell(ai['answer'])}",
            )
            for bi, ai in zip(base_items, after_items)
            if bi["kind"] == kind and (kind != "target" or bi["known"]) and ai["answer"] is not None
        ]
        lines += [f"## {title}", "", markdown_table(("question", "before", "after"), rows)]
    lines += ["✔ marks an answer that contains the expected fact.", ""]
    write_text(path, "\n".join(lines))


def candidates_markdown(summary: dict) -> str:
    """The table of what `--method auto` tried (train_summary.json's "auto"): each candidate's numbers on the
    validation probes, whether it meets the bar, and which was chosen."""
    columns = (
        "candidate",
        "steps",
        "lr",
        "leak",
        "neighbour QA",
        "general QA",
        "retain ppl",
        "leak after relearning",
        "refusals on other probes",
        "meets bar",
        "seconds",
        "chosen",
    )
    base = summary["base"]
    rows = [
        [
            "base model",
            "-",
            "-",
            num(base.get("leak_rate")),
            num(base.get("neighbour_qa_accuracy")),
            num(base.get("general_qa_accuracy")),
            num(base.get("retain_perplexity"), 2),
            "-",
            num(base.get("refusal_rate")),
            "-",
            "-",
            "-",
        ]
    ]
    for r in summary["candidates"]:
        rows.append(
            [
                r["candidate"],
                str(r["steps"]),
                f"{r['lr']:g}",
                num(r["leak_rate"]),
                num(r["neighbour_qa_accuracy"]),
                num(r["general_qa_accuracy"]),
                num(r["retain_perplexity"], 2),
                num(r["attack_worst_leak_rate"]),
                num(r.get("refusal_rate")),
                "yes" if r["meets_bar"] else "no",
                f"{r['seconds']:.0f}",
                "**chosen**" if r.get("chosen") else "",
            ]
        )
    return markdown_table(columns, rows)
