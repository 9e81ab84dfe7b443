"""Who's Harry Potter (Eldan & Russinovich 2023): fine-tune on the generic predictions a reinforced model reveals.

The method asks the engine (`fine_tunes`) for a copy of the starting model fine-tuned further on
the forget answers with plain NLL: the reinforced model, which `setup` keeps frozen on the method.
On every forget answer position the generic logits v_g = v_ref - alpha * ReLU(v_reinforced - v_ref)
lower exactly the tokens that the extra exposure boosted, and the model is trained onto argmax v_g.
The whole answer counts, not just its `spans`, as in the paper: where the reinforced model agrees
with the base, the generic label is the base's own prediction and the term keeps the answer's
generic wording intact.

The paper's anchored-term translation (target-specific terms swapped for generic ones) comes from
the data's "anchored" alternative answers: `prepare` attaches each forget question's anchored answer
to its forget records, and `collate` turns those into an extra "anchored" sub-batch trained with
NLL. Data without anchored answers simply has no such sub-batch. This relabels the answer as a
whole instead of aligning the paper's per-token generic predictions on the translated text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from obliviate.methods.base import FineTune, LossOutput, Method, register_method
from obliviate.models.logprobs import nll, plus_retain
from obliviate.models.prompts import encode


@dataclass
class WHPConfig:
    alpha: float = field(
        default=5.0,
        metadata={
            "help": (
                "how far the reinforced model's boost is subtracted: v_g = v_ref - alpha * ReLU(v_reinforced - v_ref) "
                "(paper: 5)"
            )
        },
    )
    anchored_weight: float = field(
        default=1.0,
        metadata={
            "help": (
                "weight of the NLL of the anchored alternative answers (forget answers with the target's terms swapped "
                "for generic ones), when the data has them; 0 disables it"
            )
        },
    )
    retain_weight: float = field(default=1.0, metadata={"help": "weight of the retain NLL (0 disables it)"})
    reinforce_steps: int = field(
        default=20, metadata={"help": "AdamW steps of fine-tuning on the forget answers that make the reinforced model"}
    )
    reinforce_lr: float = field(default=3e-5, metadata={"help": "learning rate of the reinforced model's fine-tuning"})
    reinforce_batch_size: int = field(default=4, metadata={"help": "forget records per reinforcement step"})
    seed: int = field(default=0, metadata={"help": "seed of the order the reinforcement sees the forget records in"})


def generic_logits(ref_logits: torch.Tensor, reinforced_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_g = v_ref - alpha * ReLU(v_reinforced - v_ref)."""
    ref_logits = ref_logits.float()
    return ref_logits - alpha * F.relu(reinforced_logits.float() - ref_logits)


def whp_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, reinforced_logits: torch.Tensor, labels: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over labelled positions of CE(logits, argmax v_g), and the share of those positions whose
    generic label differs from the answer's own next token.

    Shifted like `token_logprobs`: logits at t are scored at the position of the label at t+1.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    target = generic_logits(ref_logits[:, :-1], reinforced_logits[:, :-1], alpha).argmax(-1)
    ce = F.cross_entropy(logits[mask].float(), target[mask]) if mask.any() else logits.sum() * 0.0
    changed = (target[mask] != labels[mask]).float().mean() if mask.any() else torch.zeros(())
    return ce, changed


@register_method
class WHP(Method):
    name = "whp"
    help = (
        "Who's Harry Potter: train forget answers onto generic predictions (base logits minus what a model reinforced "
        "on the forget answers boosts), plus NLL on anchored-term answers when the data has them and retain NLL."
    )
    source = "Eldan & Russinovich 2023, Who's Harry Potter? Approximate Unlearning in LLMs (arXiv:2310.02238)"
    config_class = WHPConfig
    needs_ref_model = True
    batches = ("forget", "retain")
    train_defaults = {"lr": 4e-5, "steps": 20}

    def prepare(self, data):
        """Attaches to each forget record the anchored alternative answer of its question, if any."""
        if not self.config.anchored_weight:
            return data
        anchored: dict[str, str] = {}
        for r in data.get("alt", []):
            if r.get("kind") == "anchored":
                anchored.setdefault(r["question"], r["answer"])
        forget = [
            {**r, "anchored": anchored[r["question"]]} if r.get("question") in anchored else r
            for r in data.get("forget", [])
        ]
        return {**data, "forget": forget}

    def fine_tunes(self, data):
        """The reinforced model: the starting model fine-tuned on the whole forget answers (spans off)."""
        c = self.config
        records = [{k: v for k, v in r.items() if k != "spans"} for r in data["forget"]]
        return [FineTune("reinforced", records, c.reinforce_steps, c.reinforce_lr, c.reinforce_batch_size, c.seed)]

    def setup(self, model, tokenizer, data, ref, tuned=None):
        self.reinforced = tuned["reinforced"]

    def collate(self, tokenizer, name, records, max_length):
        if name != "forget":
            return super().collate(tokenizer, name, records, max_length)
        out = {"forget": encode(tokenizer, [{k: v for k, v in r.items() if k != "spans"} for r in records], max_length)}
        anchored = [{"question": r["question"], "answer": r["anchored"]} for r in records if "anchored" in r]
        if anchored:
            out["anchored"] = encode(tokenizer, anchored, max_length)
        return out

    def loss(self, model, batch, ref=None) -> LossOutput:
        sub = batch["forget"]
        inputs = {"input_ids": sub["input_ids"], "attention_mask": sub["attention_mask"]}
        logits = model(**inputs).logits
        with torch.no_grad():
            ref_logits = ref(**inputs).logits
            reinforced_logits = self.reinforced.to(sub["input_ids"].device)(**inputs).logits
        loss, changed = whp_loss(logits, ref_logits, reinforced_logits, sub["labels"], self.config.alpha)
        logs = {"whp_ce": loss.item(), "relabelled": changed.item()}
        if "anchored" in batch and self.config.anchored_weight:
            anchored = nll(model, batch["anchored"])
            logs["anchored_nll"] = anchored.item()
            loss = loss + self.config.anchored_weight * anchored
        return LossOutput(plus_retain(model, batch, loss, logs, self.config.retain_weight), logs)
