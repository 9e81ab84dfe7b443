"""IdkPO: DPO preferring an alternative answer (refusal, negation) over the forget answer (open-unlearning's IdkDPO)."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.errors import UserError
from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import dpo_loss, plus_retain, ref_logprob, sequence_logprob, token_mean_nll
from obliviate.models.prompts import encode


@dataclass
class IdkPOConfig:
    beta: float = field(default=0.1, metadata={"help": "DPO inverse temperature (open-unlearning IdkDPO: 0.1)"})
    alpha: float = field(
        default=20.0,
        metadata={
            "help": (
                "weight of the retain NLL (0 disables it); the DPO term is summed over answer tokens, and with a "
                "weight of 1 or 5 the preferred refusal spread to every question on the embedded model "
                "(docs/METHODS.md)"
            )
        },
    )
    alt_kinds: tuple[str, ...] = field(
        default=("refusal", "negation"),
        metadata={
            "help": "which alternative answers of alt.jsonl are preferred over the forget answer: guardrail, negation, "
            "other_subject, anchored, refusal, mismatch"
        },
    )


def preference_pairs(forget: list[dict], alt: list[dict], kinds: tuple[str, ...]) -> list[dict]:
    """{question, chosen, rejected} for every (alternative of a chosen kind, forget answer) sharing a question.

    Forget records without a question (prompt/completion text) have no alternative and are skipped.
    """
    by_question: dict[str, list[str]] = {}
    for r in alt:
        if r.get("kind") in kinds:
            by_question.setdefault(r["question"], []).append(r["answer"])
    return [
        {"question": f["question"], "chosen": a, "rejected": f["answer"]}
        for f in forget
        if "question" in f
        for a in by_question.get(f["question"], [])
    ]


@register_method
class IdkPO(Method):
    name = "idkpo"
    help = (
        "DPO with an alternative answer (refusal, negation) preferred over the forget answer, relative to the base "
        "model; plus retain NLL."
    )
    source = (
        "Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290), as IdkDPO in open-unlearning "
        "(Maini et al. 2024, TOFU, arXiv:2401.06121)"
    )
    config_class = IdkPOConfig
    needs_ref_model = True
    ref_logprob_subs = ("chosen", "rejected")
    batches = ("pairs", "retain")
    train_defaults = {"lr": 1e-5, "steps": 10}

    def prepare(self, data):
        """Adds the "pairs" stream; raises UserError when no forget question has an alternative of the chosen kinds."""
        kinds = tuple(self.config.alt_kinds)
        pairs = preference_pairs(data.get("forget", []), data.get("alt", []), kinds)
        if not pairs:
            names = " or ".join(kinds)
            raise UserError(
                f"The data has no {names} alternative answers to its forget questions; "
                f"rebuild it with `obliviate data --alt {','.join(kinds)}`."
            )
        return {**data, "pairs": pairs}

    def collate(self, tokenizer, name, records, max_length):
        if name != "pairs":
            return super().collate(tokenizer, name, records, max_length)
        return {
            side: encode(tokenizer, [{"question": r["question"], "answer": r[side]} for r in records], max_length)
            for side in ("chosen", "rejected")
        }

    def loss(self, model, batch, ref=None) -> LossOutput:
        chosen, n_chosen = sequence_logprob(model, batch["chosen"])
        rejected, n_rejected = sequence_logprob(model, batch["rejected"])
        # The alternative answer is the chosen side, the forget answer the rejected one.
        dpo = dpo_loss(
            chosen - ref_logprob(ref, batch["chosen"]), rejected - ref_logprob(ref, batch["rejected"]), self.config.beta
        )
        logs = {
            "dpo": dpo.item(),
            "chosen_nll": token_mean_nll(chosen, n_chosen).item(),
            "rejected_nll": token_mean_nll(rejected, n_rejected).item(),
        }
        return LossOutput(plus_retain(model, batch, dpo, logs, self.config.alpha), logs)
