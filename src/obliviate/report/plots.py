"""The report's figures as PNG bytes (matplotlib, no display): loss curves, leak per attack, membership-inference
score distributions, leak against utility. Each takes plain values read from a run's files."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display: the figures only ever go to files and web pages

import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from obliviate.evaluation.mia import SCORES  # noqa: E402

BEFORE, AFTER = "#9aa5b1", "#c0392b"  # the base model's colour and the unlearned model's, in every figure


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png_bytes: bytes) -> str:
    """A PNG as a data: URI, for an <img> in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def loss_figure(rows: list[dict]):
    """Every logged term of train_log.jsonl (`rows`) against the step; a note when nothing was trained."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    terms = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("step", "seconds")]
    for term in terms:
        pts = [(r["step"], r[term]) for r in rows if isinstance(r.get(term), int | float)]
        if pts:
            ax.plot(*zip(*pts), label=term, marker="." if len(pts) < 30 else None)
    if not terms:
        ax.text(0.5, 0.5, "no training steps (an edit method, or not started)", ha="center", va="center")
    else:
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title("Loss terms while unlearning")
    ax.grid(alpha=0.3)
    return fig


def attack_leaks(metrics: dict) -> dict[str, float | None]:
    """{attack: leak rate} from a metrics dict, "none" (the plain probes) first, then every attack_<name>_leak_rate
    but the worst-of summary."""
    leaks = {"none": metrics.get("leak_rate")}
    for key, value in metrics.items():
        if key == "attack_leak_rate":  # a probe leaks under at least one attack
            leaks["any attack"] = value
        elif key.startswith("attack_") and key.endswith("_leak_rate") and key != "attack_worst_leak_rate":
            leaks[key.removeprefix("attack_").removesuffix("_leak_rate")] = value
    return leaks


def attack_figure(before: dict, after: dict):
    """Leak rate per attack, before and after, as paired bars (a missing value draws no bar)."""
    b, a = attack_leaks(before), attack_leaks(after)
    names = list(dict.fromkeys([*b, *a]))
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(names)), 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [b.get(n) or 0 for n in names], 0.4, label="before", color=BEFORE)
    ax.bar([i + 0.2 for i in x], [a.get(n) or 0 for n in names], 0.4, label="after", color=AFTER)
    ax.set_xticks(list(x), [n.replace("_", " ") for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("leak rate")
    ax.set_title("Leak rate per attack (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def mia_figure(before: list[dict], after: list[dict], attack: str = "loss"):
    """Histograms of one membership-inference score (evaluation.mia.SCORES) for forget records (members) and
    held-out records, before and after: `before` and `after` are metrics.json's items["mia"] rows."""
    score = SCORES[attack]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, rows, title in zip(axes, (before, after), ("before", "after")):
        for which, label, colour in (("members", "forget", AFTER), ("nonmembers", "held-out", BEFORE)):
            values = [score(r) for r in rows if r.get("set") == which]
            if values:
                ax.hist(values, bins=15, alpha=0.6, label=f"{label} ({len(values)})", color=colour)
        ax.set_title(f"{title}: {attack} score")
        ax.set_xlabel("membership score (higher: looks trained on)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("records")
    return fig


def leak_utility_figure(points: dict[str, tuple[float, float]], base: tuple[float, float], bar: dict):
    """Leak rate (x) against general-QA accuracy (y): one point per method, the base model, and the bar (leak at most
    base * (1 - leak_cut), general QA at least base - general_qa_drop) as the shaded corner a method must reach."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    leak_max = base[0] * (1 - bar["leak_cut"])
    qa_min = base[1] - bar["general_qa_drop"]
    ax.axvline(leak_max, color="#27ae60", ls="--", lw=1)
    ax.axhline(qa_min, color="#27ae60", ls="--", lw=1)
    ax.fill_between([-0.02, leak_max], qa_min, 1.02, color="#27ae60", alpha=0.12, label="meets the bar")
    ax.scatter([base[0]], [base[1]], color=BEFORE, s=60, marker="s", label="base model", zorder=3)
    ax.annotate("base", base, textcoords="offset points", xytext=(5, 4), fontsize=8)
    for name, (x, y) in points.items():
        ax.scatter([x], [y], color=AFTER, s=40, zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("leak rate (lower is better)")
    ax.set_ylabel("general QA accuracy (higher is better)")
    ax.set_title("Leak against utility")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig
