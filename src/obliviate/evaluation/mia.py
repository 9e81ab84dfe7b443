"""Membership inference: can an attacker tell the forget records from held-out ones?

Each attack turns a record's likelihood statistics (likelihood.score_records) into a
membership score, higher meaning "more likely trained on"; the AUC is the ROC AUC of that
score with the forget records as positives (scikit-learn). 0.5: indistinguishable. After
unlearning, an AUC far below 0.5 is also a leak (the forget set stands out by being
unusually unlikely); PrivLeak measures the AUC against an oracle that never saw the data.
"""

from __future__ import annotations

from sklearn.metrics import roc_auc_score

SCORES = {
    # LOSS (Yeom et al. 2018): members have low loss.
    "loss": lambda s: -s["nll"],
    # zlib (Carlini et al. 2021): log-perplexity relative to the text's zlib entropy.
    "zlib": lambda s: -s["nll"] / max(s["zlib_bytes"], 1),
    # Min-K% (Shi et al. 2024): mean of the k% least likely tokens' log-probs.
    "min_k": lambda s: s["min_k"],
    # Min-K%++ (Zhang et al. 2024): the same over standardized token log-probs.
    "min_k_pp": lambda s: s["min_k_pp"],
}


def mia_auc(members: list[dict], nonmembers: list[dict]) -> dict[str, float | None]:
    """{attack: AUC} for scored member and non-member records; None when a side is empty."""
    if not members or not nonmembers:
        return {name: None for name in SCORES}
    labels = [1] * len(members) + [0] * len(nonmembers)
    return {name: float(roc_auc_score(labels, [f(s) for s in members + nonmembers])) for name, f in SCORES.items()}


def privleak(auc: float | None, oracle_auc: float | None) -> float | None:
    """MUSE's PrivLeak: (AUC - AUC_oracle) / AUC_oracle."""
    if auc is None or not oracle_auc:
        return None
    return (auc - oracle_auc) / oracle_auc
