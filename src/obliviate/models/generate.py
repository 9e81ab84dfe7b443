"""Batched generation with left padding: the only way obliviate generates text."""

from __future__ import annotations

import copy
import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.models.attention import cpu_inference
from obliviate.models.hooks import clamps_off, feature_clamps, hooks_of
from obliviate.models.inference import DEFAULT, InferenceOptions
from obliviate.models.prefix import cache_name, can_prefill, last_logits_only, length_batches, prefilled, shared_length
from obliviate.models.prompts import pad_id, probe_prompt, question_prompt


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
    inference: InferenceOptions = DEFAULT,
) -> list[str]:
    """Complete each prompt (already formatted); returns decoded continuations.

    With `num_return_sequences` > 1 the result holds that many continuations per
    prompt, consecutively (each a row of the batch, `batch_size` prompts' worth per batch).
    Prompts are batched in length order. Each batch's prompts run through the model unpadded
    and their shared openings once (`models.prefix.prefilled`); where that does not apply (a
    model without a plain key/value cache, or `inference.share_prefix` off), a batch closes early
    rather than pad by more than a third (`length_batches`). Greedy decoding from there runs
    `greedy_decode`, where rows that have finished leave the batch, when the model's generation
    config adds nothing to the argmax (`plain_greedy`) and `inference.greedy_loop` is on; otherwise
    model.generate. Each of these paths must give the answers of the plain left-padded batch
    through model.generate, up to float rounding (tested in fp32).
    `use_hooks=False` ignores the model's obliviate hooks (banned words, output filter, feature
    clamps), as a plain Hugging Face consumer of the saved weights would.
    """
    if not prompts:
        return []
    if not use_hooks and any(c.enabled for c in feature_clamps(model)):
        with clamps_off(model):
            return generate(**locals())
    if seed is not None:
        torch.manual_seed(seed)
    hooks = hooks_of(model) if use_hooks else None
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    # Several samples per prompt are rows of their own, side by side, so they share the prompt's pass.
    rows = [p for p in prompts for _ in range(num_return_sequences)]
    ids = tokenizer(rows, add_special_tokens=False)["input_ids"]
    pad = pad_id(tokenizer)
    per_batch = batch_size * num_return_sequences
    # Prompts run through the model without padding (models.prefix.prefilled), so a batch is simply the
    # next `batch_size` prompts in length order; otherwise batches are cut to pad little.
    ragged = inference.share_prefix and min(map(len, ids)) > 1 and can_prefill(model, max(map(len, ids)))
    if ragged:
        batches = length_batches(list(map(len, ids)), per_batch, max_padding=math.inf)
    else:
        # Padding counts after the common prefix.
        common = shared_length(model, ids, min(map(len, ids)) - 1) if inference.share_prefix else 0
        batches = length_batches([len(row) - common for row in ids], per_batch)
    outputs: dict[int, str] = {}
    greedy = ragged and inference.greedy_loop and not do_sample and not (hooks is not None and hooks.bad_words)
    stop = plain_greedy(model) if greedy else None
    fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop or [pad])[0]
    memo: dict = {}  # prefixes already run (models.prefix.prefix_cache)
    try:
        with cpu_inference(model, inference.cpu_attention):
            for idx in batches:
                if ragged:
                    batch_ids = [ids[i] for i in idx]
                    input_ids, mask, cache = prefilled(model, batch_ids, pad, spare=max_new_tokens, memo=memo)
                    enc = {"input_ids": input_ids, "attention_mask": mask, cache_name(model): cache}
                else:
                    enc = tokenizer([rows[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                    enc = {k: v.to(model.device) for k, v in enc.items()}
                if stop is not None:
                    new = greedy_decode(model, input_ids, mask, cache, max_new_tokens, stop, fill)
                else:
                    kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens)
                    if do_sample:
                        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
                    else:
                        kwargs.update(temperature=None, top_p=None, top_k=None)
                    if hooks is not None and hooks.bad_words:
                        kwargs["bad_words_ids"] = hooks.bad_words
                    out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id)
                    new = out[:, enc["input_ids"].shape[1] :]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                if hooks is not None:
                    texts = [hooks.filter(t) for t in texts]
                outputs.update((i, t.strip()) for i, t in zip(idx, texts))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [outputs[i] for i in range(len(rows))]


def plain_greedy(model) -> list[int] | None:
    """The model's end-of-sequence ids when its generation config makes greedy decoding a plain argmax
    of the logits, else None.

    A plain argmax means model.generate, given do_sample=False, builds no logits processor (no
    repetition penalty, n-gram ban, bad words, minimum length, forced or suppressed tokens, sequence
    bias, guidance, watermark, renormalisation...), runs one beam and stops only at the end of
    sequence or the token budget (no stop strings, no time limit).
    """
    c = model.generation_config
    unset = lambda name: getattr(c, name, None) is None  # noqa: E731
    neutral = lambda name, value: getattr(c, name, None) in (None, value)  # noqa: E731
    above_zero = lambda name: (getattr(c, name, None) or 0) > 0  # noqa: E731
    plain = (
        neutral("guidance_scale", 1)
        and neutral("repetition_penalty", 1.0)
        and neutral("encoder_repetition_penalty", 1.0)
        and not above_zero("no_repeat_ngram_size")
        and not above_zero("encoder_no_repeat_ngram_size")
        and not above_zero("min_length")
        and not above_zero("min_new_tokens")
        and all(
            unset(name)
            for name in (
                "sequence_bias",
                "bad_words_ids",
                "forced_bos_token_id",
                "forced_eos_token_id",
                "exponential_decay_length_penalty",
                "suppress_tokens",
                "begin_suppress_tokens",
                "watermarking_config",
                "stop_strings",
                "max_time",
            )
        )
        and not getattr(c, "remove_invalid_values", False)
        and not getattr(c, "renormalize_logits", False)
        and neutral("num_beams", 1)
    )
    if not plain:
        return None
    eos = c.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


@torch.inference_mode()
def greedy_decode(
    model, input_ids: torch.Tensor, mask: torch.Tensor, cache, max_new_tokens: int, stop: list[int], fill: int
) -> torch.Tensor:
    """Greedy tokens [rows, max_new_tokens] from `prefilled`'s (ids, mask, cache); a row ends at a
    token of `stop`, and the positions after it hold `fill`, as model.generate's pad_token_id.

    Must equal model.generate(do_sample=False, max_new_tokens=..., pad_token_id=fill)'s new tokens for
    a model whose generation config is a plain argmax (`plain_greedy`), up to float rounding (tested
    in fp32). model.generate's greedy loop does the same arithmetic, but rows that have finished stay
    in its batch to the end. Here they leave it (the cache keeps the others' rows) once the decoding
    steps they would still cost add up to a step of the whole batch.
    """
    device = input_ids.device
    rows = input_ids.shape[0]
    out = torch.full((rows, max_new_tokens), fill, dtype=torch.long, device=device)
    live = torch.arange(rows, device=device)  # batch row -> output row
    running = torch.ones(rows, dtype=torch.bool, device=device)
    stop_ids = torch.tensor(stop, dtype=torch.long, device=device)
    tokens, positions = input_ids[:, -1:], mask.sum(-1, keepdim=True) - 1
    extra = last_logits_only(model)
    for step in range(max_new_tokens):
        logits = model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_name(model): cache},
            **extra,
        ).logits[:, -1]
        tokens = logits.argmax(-1, keepdim=True)
        out[live[running], step] = tokens[running, 0]
        running &= ~torch.isin(tokens[:, 0], stop_ids)
        left = max_new_tokens - step - 1
        if not left or not running.any():
            break
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        positions = positions + 1
        if int((~running).sum()) * left >= len(live):
            kept = running.nonzero().squeeze(-1)
            cache.batch_select_indices(kept)
            live, mask, positions = live[kept], mask[kept], positions[kept]
            tokens, running = tokens[kept], running[kept]
    return out


def answer_questions(model, tokenizer, questions: list[str], **kwargs) -> list[str]:
    """Greedy (or sampled, via kwargs) answers to plain questions."""
    return generate(model, tokenizer, [question_prompt(tokenizer, q) for q in questions], **kwargs)


def answer_probes(model, tokenizer, rows: list[dict], max_new_tokens: int = 32, **kwargs) -> list[str]:
    """Greedy answers to probe rows (chat `question`s or raw-text `prompt`s)."""
    prompts = [probe_prompt(tokenizer, r) for r in rows]
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, **kwargs)


def generation_copy(model: PreTrainedModel, inplace: bool = False) -> PreTrainedModel:
    """A bf16 copy of a CPU fp32 model for greedy and sampled generation (docs/PERFORMANCE.md times it).

    Every generation (data, probe answers before and after unlearning) goes through
    it, so base and unlearned models are compared in the same precision, the one the
    engine trains in (bf16 autocast); the evaluation scores its likelihoods on it too
    (EvalConfig.bf16). docs/DATA.md reports the leak rate measured both ways on an
    unlearned model. `inplace` converts `model` itself, for a throwaway copy such as a
    quantized or relearned model.
    """
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return model
    return (model if inplace else copy.deepcopy(model)).to(torch.bfloat16).eval()
