"""Comparisons between evaluations: before/after rows per metric, and the metrics read against an oracle."""

from __future__ import annotations

from scipy.stats import ks_2samp

from obliviate.evaluation import attacks  # noqa: F401 - registers the attack metrics, which the rows cover too
from obliviate.evaluation.metrics import METRICS, better
from obliviate.evaluation.mia import privleak


def comparison(before: dict, after: dict) -> list[dict]:
    """Before/after rows for every registered metric either side has: metric, group, before, after,
    change (after - before) and whether the change is better (`metrics.better`)."""
    rows = []
    for name, info in METRICS.items():
        b, a = before.get(name), after.get(name)
        if b is None and a is None:
            continue
        rows.append(
            {
                "metric": name,
                "group": info.group,
                "before": b,
                "after": a,
                "change": a - b if a is not None and b is not None else None,
                "better": better(name, b, a),
            }
        )
    return rows


def with_oracle(result: dict, oracle: dict) -> dict:
    """Add PrivLeak and forget quality to `result` (evaluate_model's) from the oracle's result on the same data."""
    m, o = result["metrics"], oracle["metrics"]
    for k in ("loss", "zlib", "min_k", "min_k_pp"):
        m[f"privleak_{k}"] = privleak(m.get(f"mia_auc_{k}"), o.get(f"mia_auc_{k}"))
    mine = [it["truth_ratio"] for it in result["items"]["probes"] if it.get("truth_ratio") is not None]
    theirs = [it["truth_ratio"] for it in oracle["items"]["probes"] if it.get("truth_ratio") is not None]
    m["forget_quality"] = float(ks_2samp(mine, theirs).pvalue) if mine and theirs else None
    return result
