"""Inference-time edits that travel with a saved model: banned token sequences and an output filter.

Methods that change no weights (`guardrail`) or not only weights (`suppress`) save
their edits as `obliviate_hooks.json` next to the Hugging Face files.
`obliviate.load` (models.loading.load_model) reattaches them, so a reloaded model
behaves like the one that was evaluated:

- `bad_words` are token sequences generation may not complete (transformers'
  `bad_words_ids`: the last token of a sequence gets -inf after its prefix);
- `filter_terms` replaces a generated answer that names one of the terms with
  `filter_message` (obliviate's generate() applies it);
- a system prompt is not a hook: `guardrail` writes it into the tokenizer's chat
  template, so any Hugging Face consumer of the saved directory gets it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from obliviate.errors import UserError
from obliviate.io import read_json, write_json

HOOKS_FILE = "obliviate_hooks.json"


@dataclass
class Hooks:
    method: str
    bad_words: list[list[int]] = field(default_factory=list)
    filter_terms: list[str] = field(default_factory=list)
    filter_message: str = "I can't help with that."
    system_prompt: str | None = None  # recorded for the report; lives in the chat template
    notes: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        write_json(Path(directory) / HOOKS_FILE, asdict(self))

    @classmethod
    def load(cls, directory: str | Path) -> Hooks | None:
        path = Path(directory) / HOOKS_FILE
        if not path.is_file():
            return None
        try:
            return cls(**read_json(path))
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(
                f"{path} is not a valid obliviate hooks file ({e}); re-save the model with obliviate."
            ) from None

    def filter(self, answer: str) -> str:
        if not self.filter_terms:
            return answer
        from obliviate.leak import terms_pattern

        return self.filter_message if terms_pattern(self.filter_terms).search(answer) else answer


def attach(model, hooks: Hooks) -> None:
    """Make obliviate's generate() apply `hooks` for `model`; attaching again replaces them."""
    model.obliviate_hooks = hooks


def hooks_of(model) -> Hooks | None:
    return getattr(model, "obliviate_hooks", None)


def guard_chat_template(template: str, system_prompt: str) -> str:
    """`template` with `system_prompt` put first in the system message (added when there is none)."""
    quoted = '"' + system_prompt.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    prefix = (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {quoted} + '\\n\\n' + messages[0]['content']}}]"
        " + messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {quoted}}}] + messages -%}}"
        "{%- endif -%}"
    )
    return prefix + template
