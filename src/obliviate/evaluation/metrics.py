"""The metric registry: every number obliviate reports, with its direction, group and source.

`metrics.json` carries this metadata next to the values, so a reader (the report, a
benchmark, a notebook) never has to guess whether a rise is good news.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Metric:
    """One registered metric: its name, group, direction, help text, source and best value."""

    name: str
    group: str  # forget | privacy | utility | classification | robustness
    higher_is_better: bool | None  # None: neither; closer to `best` is better (or purely informative)
    help: str
    source: str = ""
    best: float | None = None

    def info(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "name"}


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str, group: str, higher_is_better: bool | None, help: str, source: str = "", best: float | None = None
) -> None:
    """Add metric `name` to METRICS: its group, direction (None: closer to `best` is better, or purely
    informative), help text and source."""
    METRICS[name] = Metric(name, group, higher_is_better, help, source, best)


def better(name: str, before: float | None, after: float | None) -> bool | None:
    """Whether `after` is better than `before` for metric `name` (None when undecidable or equal)."""
    m = METRICS.get(name)
    if m is None or before is None or after is None or before == after:
        return None
    if m.higher_is_better is not None:
        return (after > before) == m.higher_is_better
    if m.best is not None:
        return abs(after - m.best) < abs(before - m.best)
    return None


TOFU = "TOFU (Maini et al. 2024)"
MUSE = "MUSE (Shi et al. 2024)"

# Forget efficacy: on held-out target probes the base model answered with the fact ("known").
register_metric(
    "leak_rate",
    "forget",
    False,
    "share of known held-out target probes whose greedy answer still reveals the fact (an expected answer, "
    "or a target keyword when a probe has none, not echoed from the question)",
    "Eldan & Russinovich 2023 (familiarity by keyword); Yao et al. 2024",
)
register_metric(
    "forget_qa_accuracy",
    "forget",
    False,
    "share of known target probes with expected answers whose greedy answer contains one",
    TOFU,
)
register_metric(
    "forget_choice_accuracy",
    "forget",
    False,
    "share of known target probes where the correct answer is more likely than every wrong candidate "
    "(likelihood multiple choice)",
    "TOFU / WMDP-style multiple choice",
)
register_metric(
    "forget_truth_ratio",
    "forget",
    True,
    "mean over known target probes of min(R, 1/R), R = mean P(wrong)^(1/n) / P(correct)^(1/n): 1 when the "
    "model cannot tell the true answer from wrong ones",
    TOFU,
    best=1.0,
)
register_metric(
    "forget_rouge_l",
    "forget",
    False,
    "ROUGE-L recall of the answers to known target probes against the base model's answers",
    "TOFU; rouge-score (Lin 2004)",
)
register_metric(
    "forget_loss", "forget", True, "mean token NLL (nats) of the forget records' answers", "Yao et al. 2024; TOFU"
)
register_metric("forget_perplexity", "forget", True, "exp(forget_loss)", "Yao et al. 2024")
register_metric(
    "verbatim_rouge_l",
    "forget",
    False,
    "ROUGE-L recall of greedy continuations of forget-document prefixes against the true text (document targets)",
    MUSE + " verbatim memorization",
)
register_metric(
    "target_refusal_rate",
    "forget",
    None,
    "share of known target probes answered with a refusal or 'I don't know' (informative: how the model forgets)",
)
# Membership inference: forget records (trained on) vs held-out text of the same kind.
for attack, src in [
    ("loss", "Yeom et al. 2018"),
    ("zlib", "Carlini et al. 2021"),
    ("min_k", "Shi et al. 2024 (Min-K%)"),
    ("min_k_pp", "Zhang et al. 2024 (Min-K%++)"),
]:
    register_metric(
        f"mia_auc_{attack}",
        "privacy",
        None,
        f"ROC AUC of the {attack} membership score separating forget records from held-out records; 0.5 "
        "means indistinguishable (an oracle's value is the ideal)",
        src + "; scikit-learn",
        best=0.5,
    )
    register_metric(
        f"privleak_{attack}",
        "privacy",
        None,
        f"(AUC - oracle AUC) / oracle AUC for the {attack} score: 0 is ideal, negative means "
        "over-unlearned, positive under-unlearned (only with --oracle)",
        MUSE,
        best=0.0,
    )
register_metric(
    "forget_quality",
    "privacy",
    True,
    "KS-test p-value between the truth-ratio distributions of this model and the oracle on known target "
    "probes (only with --oracle)",
    TOFU,
)
# Utility.
register_metric(
    "retain_perplexity", "utility", False, "perplexity of held-out retain prose (never trained on)", "Yao et al. 2024"
)
register_metric(
    "general_qa_accuracy", "utility", True, "share of general probes (capitals, general knowledge) answered correctly"
)
register_metric(
    "neighbour_qa_accuracy",
    "utility",
    True,
    "share of neighbour-topic probes answered correctly",
    "Eldan & Russinovich 2023",
)
register_metric(
    "refusal_rate",
    "utility",
    False,
    "share of general and neighbour probes answered with a refusal or 'I don't know'",
    "Yao et al. 2024 (over-refusal)",
)
register_metric(
    "distinct_1", "utility", True, "distinct unigrams / all unigrams over all greedy answers", "Li et al. 2016"
)
register_metric(
    "distinct_2", "utility", True, "distinct bigrams / all bigrams over all greedy answers", "Li et al. 2016"
)
register_metric(
    "repetition_rate",
    "utility",
    False,
    "share of answers in which some word 3-gram occurs twice",
    "Welleck et al. 2020",
)
register_metric(
    "gibberish_rate",
    "utility",
    False,
    "share of answers that are not language: mostly non-letters, a word repeated 4+ times in a row, or a "
    "'word' over 25 letters",
)
# The classification view (the LLM Unlearning Project seed): positives are known target probes,
# negatives are keep probes the base answered; the model "forgets" a probe when it does not reveal it.
SEED = "the LLM Unlearning Project seed"
register_metric(
    "cls_accuracy",
    "classification",
    True,
    "share of the mixed probe set decided right (forgot a target probe, kept a keep probe)",
    SEED,
)
register_metric("cls_precision", "classification", True, "forgotten target probes / all forgotten probes", SEED)
register_metric(
    "cls_recall",
    "classification",
    True,
    "forgotten target probes / all known target probes (= 1 - leak rate on them)",
    SEED,
)
register_metric("cls_f1", "classification", True, "harmonic mean of precision and recall", SEED)
register_metric(
    "cls_loss_forget", "classification", True, "mean token NLL of the correct answers to the target probes", SEED
)
register_metric(
    "cls_loss_keep", "classification", False, "mean token NLL of the correct answers to the keep probes", SEED
)
