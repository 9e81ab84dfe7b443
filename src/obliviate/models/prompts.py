"""Turn records into model inputs: chat template for chat models, a plain QA format otherwise.

A record is a dict with ``question`` (+ ``answer``), ``prompt`` (+ ``completion``: raw text
the model continues, no chat template) or ``text`` (raw prose).
Label masks are built from token lengths, never from the pad id: the embedded
model's pad token *is* its end-of-turn token, and masking by pad id would hide
every real end of answer from the loss (a known bug in open-unlearning).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

PLAIN_QA = "Question: {question}\nAnswer:"


def question_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The text the model sees before it answers `question`."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_QA.format(question=question)


def answer_completion(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> str:
    """The text that follows `question_prompt` when the model gives `answer`, end-of-turn included."""
    if getattr(tokenizer, "chat_template", None):
        prompt = question_prompt(tokenizer, question)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        if full.startswith(prompt):
            return full[len(prompt) :].rstrip("\n")
        return answer + (tokenizer.eos_token or "")
    return " " + answer + (tokenizer.eos_token or "")


def probe_prompt(tokenizer: PreTrainedTokenizerBase, row: dict) -> str:
    """What the model is given for a probe or record: a chat question, or a raw-text prompt."""
    if "question" in row:
        return question_prompt(tokenizer, row["question"])
    return _bos(tokenizer) + row["prompt"]


def _bos(tokenizer) -> str:
    return tokenizer.bos_token if tokenizer.bos_token and not getattr(tokenizer, "chat_template", None) else ""


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token id that fills padding (0 for a tokenizer without a pad token; the mask hides it)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def split_record(tokenizer: PreTrainedTokenizerBase, record: dict) -> tuple[str, str]:
    """(prompt, completion) for a record; the loss is taken on the completion only."""
    if "question" in record:
        return question_prompt(tokenizer, record["question"]), answer_completion(
            tokenizer, record["question"], record.get("answer", "")
        )
    if "prompt" in record:
        return _bos(tokenizer) + record["prompt"], record.get("completion", "")
    return _bos(tokenizer), record["text"]


def _span_mask(tokenizer, completion: str, answer: str, spans: list[list[int]]) -> tuple[list[int], list[bool]]:
    """Completion token ids and, per token, whether it overlaps one of `spans` (char ranges of `answer`)."""
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    shift = max(completion.find(answer), 0)
    keep = [any(s + shift < end and start < e + shift for s, e in spans) for start, end in enc["offset_mapping"]]
    return enc["input_ids"], keep


def encode(tokenizer: PreTrainedTokenizerBase, records: list[dict], max_length: int = 256) -> dict[str, torch.Tensor]:
    """Tokenize records into a right-padded batch with prompt and padding masked to -100 in labels.

    A record with ``spans`` (character ranges of its answer or completion) carries labels on
    the tokens of those spans only.
    """
    ids_list, n_prompt, span_keep = [], [], []
    for rec in records:
        prompt, completion = split_record(tokenizer, rec)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        if rec.get("spans"):
            c, keep = _span_mask(tokenizer, completion, rec.get("answer", rec.get("completion", "")), rec["spans"])
        else:
            c, keep = tokenizer(completion, add_special_tokens=False)["input_ids"], None
        ids = (p + c)[:max_length]
        ids_list.append(ids)
        n_prompt.append(min(len(p), len(ids)))
        span_keep.append(([False] * len(p) + keep)[:max_length] if keep is not None else None)
    width = max(len(x) for x in ids_list)
    pad = pad_id(tokenizer)
    input_ids = torch.full((len(records), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(records), width), dtype=torch.long)
    labels = torch.full((len(records), width), -100, dtype=torch.long)
    for i, (ids, n_p) in enumerate(zip(ids_list, n_prompt)):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, :n] = 1
        labels[i, n_p:n] = input_ids[i, n_p:n]  # from lengths: a real EOS keeps its label
        if span_keep[i] is not None:
            labels[i, :n][~torch.tensor(span_keep[i], dtype=torch.bool)] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
