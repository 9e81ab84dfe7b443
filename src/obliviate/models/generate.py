"""Batched generation with left padding: the only way obliviate generates text."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.models.hooks import hooks_of
from obliviate.models.prefix import cache_name, left_padded, prefix_cache, shared_length
from obliviate.models.prompts import probe_prompt, question_prompt


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,  # 0: no top-k cut
    num_return_sequences: int = 1,
    seed: int | None = None,
    use_hooks: bool = True,
) -> list[str]:
    """Complete each prompt (already formatted); returns decoded continuations.

    With `num_return_sequences` > 1 the result holds that many continuations per
    prompt, consecutively. Prompts are batched in length order, and a batch closes early
    when the next prompt would pad it by more than a third (`length_batches`).
    `use_hooks=False` ignores the model's obliviate hooks (banned words, output filter), as
    a plain Hugging Face consumer of the saved weights would.
    """
    if not prompts:
        return []
    if seed is not None:
        torch.manual_seed(seed)
    hooks = hooks_of(model) if use_hooks else None
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    common = shared_length(model, ids, min(map(len, ids)) - 1)  # runs once per batch: batches pad what follows it
    lengths = [len(row) - common for row in ids]
    outputs: dict[int, list[str]] = {}
    try:
        for idx in length_batches(lengths, batch_size):
            enc = _with_shared_prefix(model, tokenizer, [ids[i] for i in idx]) if num_return_sequences == 1 else None
            if enc is None:
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(model.device) for k, v in enc.items()}
            kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if hooks is not None and hooks.bad_words:
                kwargs["bad_words_ids"] = hooks.bad_words
            out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            if hooks is not None:
                texts = [hooks.filter(t) for t in texts]
            for j, i in enumerate(idx):
                outputs[i] = [t.strip() for t in texts[j * num_return_sequences : (j + 1) * num_return_sequences]]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [t for i in range(len(prompts)) for t in outputs[i]]


def length_batches(lengths: list[int], batch_size: int, max_padding: float = 1 / 3, min_rows: int = 32) -> list[list[int]]:
    """Indices in length order, cut into batches of at most `batch_size`; a batch of `min_rows` or
    more also closes when the next item would make its padded size exceed its real tokens by
    more than `max_padding` (attack prompts range from 17 to 143 tokens). Smaller batches would
    lose more in the token-by-token decoding than they save in padding."""
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        if current and (len(current) == batch_size
                        or (len(current) >= min_rows and (len(current) + 1) * n > (1 + max_padding) * (real + n))):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    return batches + [current] if current else batches


def _with_shared_prefix(model, tokenizer, ids: list[list[int]]) -> dict | None:
    """generate() inputs that run the prompts' (token ids) common prefix once (models.prefix), or None.

    Layout: [prefix | left padding | each prompt's remainder]; the prefix's key/value cache
    is repeated for the batch, and positions come from the attention mask.
    """
    shared = shared_length(model, ids, min(map(len, ids)) - 1)  # every prompt keeps a token after the prefix
    if not shared:
        return None
    input_ids, mask = left_padded(ids, shared, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    cache = prefix_cache(model, input_ids[:1, :shared].to(model.device), len(ids))
    return {"input_ids": input_ids.to(model.device), "attention_mask": mask.to(model.device), cache_name(model): cache}


def answer_questions(model, tokenizer, questions: list[str], **kwargs) -> list[str]:
    """Greedy (or sampled, via kwargs) answers to plain questions."""
    return generate(model, tokenizer, [question_prompt(tokenizer, q) for q in questions], **kwargs)


def answer_probes(model, tokenizer, rows: list[dict], max_new_tokens: int = 32, **kwargs) -> list[str]:
    """Greedy answers to probe rows (chat `question`s or raw-text `prompt`s)."""
    return generate(model, tokenizer, [probe_prompt(tokenizer, r) for r in rows], max_new_tokens=max_new_tokens, **kwargs)


def generation_copy(model: PreTrainedModel, inplace: bool = False) -> PreTrainedModel:
    """A bf16 copy of a CPU fp32 model for greedy and sampled generation: 2-2.5x faster.

    Every generation (data, probe answers before and after unlearning) goes through
    it, so base and unlearned models are compared in the same precision, the one the
    engine trains in (bf16 autocast); the evaluation scores its likelihoods on it too
    (EvalConfig.bf16). docs/DATA.md reports the leak rate measured both ways on an
    unlearned model. `inplace` converts `model` itself, for a throwaway copy such as a
    quantized or relearned model.
    """
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return model
    import copy

    return (model if inplace else copy.deepcopy(model)).to(torch.bfloat16).eval()
