"""Guardrail: no weight change; a system instruction plus an output filter on target terms."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.methods.base import EditMethod, register_method
from obliviate.models.hooks import Hooks, attach, guard_chat_template


@dataclass
class GuardrailConfig:
    instruction: str = field(
        default=(
            'If a question is about {target}, reply only: "I can\'t help with that." Answer every other question '
            "normally."
        ),
        metadata={
            "help": (
                "system instruction put before every conversation; {target} and {terms} (the target's names and "
                "keywords) are filled in; empty: no instruction. A longer one that listed the terms and said 'never "
                "discuss' made the embedded model refuse general questions too (docs/METHODS.md)"
            )
        },
    )
    filter: bool = field(
        default=True,
        metadata={"help": "replace any generated answer that names a target term with the refusal message"},
    )
    message: str = field(default="I can't help with that.", metadata={"help": "what a filtered answer becomes"})


@register_method
class Guardrail(EditMethod):
    name = "guardrail"
    help = (
        "No weight change: a system instruction not to discuss the target (written into the chat template) "
        "and an output filter that replaces answers naming a target term. The baseline every method must beat on "
        "robustness."
    )
    source = (
        "the Machine-Unlearning and synthetic-data seeds (guardrail prompting); Thaker et al. 2024, Guardrail "
        "baselines for unlearning (arXiv:2403.03329)"
    )
    config_class = GuardrailConfig

    def edit(self, model, tokenizer, data, target) -> Hooks:
        cfg = self.config
        terms = list(dict.fromkeys(target.terms))
        instruction = cfg.instruction.format(target=target.name, terms=", ".join(terms[:12]))
        notes = {}
        if not instruction:
            instruction = None
        elif getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = guard_chat_template(tokenizer.chat_template, instruction)
        else:
            notes["instruction"] = "not applied: the tokenizer has no chat template; only the output filter acts"
        hooks = Hooks(
            method=self.name,
            filter_terms=terms if cfg.filter else [],
            filter_message=cfg.message,
            system_prompt=instruction,
            notes=notes,
        )
        attach(model, hooks)
        return hooks
