"""`obliviate eval`: every metric of the suite for one model, the only place reported numbers come from.

Work is shared so nothing is computed twice: one batched greedy generation over the probes
(plus one over all prompting attacks), and one likelihood pass (probes.likelihood_pass)
over every record a likelihood metric needs: membership-inference members and non-members
(whose losses are also the forget loss), answer candidates (truth ratio, multiple choice,
classification losses) and retain prose. Generation and likelihoods run on a bf16 copy of a
CPU fp32 model (`EvalConfig.bf16`), the precision the engine trains in.

Forget efficacy is measured on the held-out target probes the base model answered with the
fact ("known"): with `base` (the base model's evaluation) its answers decide, otherwise the
data builder's `known` flags (probes.known_flags).

The phases of `evaluate_model`: the attacks start in a second process where they can
(`_start_attacks`), the probes are answered, the likelihood pass scores what the metrics need,
verbatim continuations are scored for document targets, and the attacks left to this process run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from obliviate import malloc
from obliviate.evaluation import worker
from obliviate.evaluation.attacks import (
    attack_metrics,
    attack_parts,
    attack_probes,
    part_work,
    run_attacks,
    split_attacks,
)
from obliviate.evaluation.compare import with_oracle
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.document import document
from obliviate.evaluation.likelihood import mean_record_nll, perplexity
from obliviate.evaluation.mia import mia_auc
from obliviate.evaluation.probes import (
    known_flags,
    likelihood_pass,
    likelihood_records,
    loss_probes,
    mean,
    probe_view,
)
from obliviate.evaluation.text import rouge_l_recall
from obliviate.leak import probe_hit
from obliviate.models.generate import generate, generation_copy
from obliviate.models.hooks import hooks_of
from obliviate.models.inference import DEFAULT, InferenceOptions
from obliviate.models.prompts import probe_prompt

VERBATIM_TOKENS = 48  # new tokens of each verbatim continuation (the builder's continuations run 32 words)


@malloc.policy("keep")  # freed memory stays for the next batch's buffers (obliviate.malloc)
def evaluate_model(
    model,
    tokenizer,
    data: EvalData,
    config: EvalConfig | None = None,
    *,
    base: dict | None = None,
    answers: list[str] | None = None,
    is_base: bool = False,
    log: Callable[[str], None] = print,
    inference: InferenceOptions = DEFAULT,
) -> dict:
    """Run the suite on an in-memory model; returns {"metrics", "items", "seconds"}.

    `base`: the base model's result (decides which probes are known). `answers`: greedy
    answers to all probes computed before (the data stage's base answers), skipping that
    generation. `is_base`: this is the base model (no relearning, no "recovered").
    `inference`: how generation and scoring run (models/inference.py); the defaults give the
    same values as every switch off, up to float rounding.
    """
    cfg = config or EvalConfig()
    probes = data.probes
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    gen = generation_copy(model) if cfg.bf16 else model
    known = known_flags(data, base)
    parts = attack_parts(data, cfg, is_base) if cfg.attacks else []
    forked, here = _start_attacks(model, gen, tokenizer, data, cfg, known, parts, answers is None, log, inference)
    try:
        if answers is not None:
            answer_of = dict(enumerate(answers))
        else:
            ask = [i for i, p in enumerate(probes) if p["kind"] != "target" or known is None or known[i]]
            outs = generate(
                gen,
                tokenizer,
                [probe_prompt(tokenizer, probes[i]) for i in ask],
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                inference=inference,
            )
            answer_of = dict(zip(ask, outs))
            seconds["probe answers"] = time.perf_counter() - t
        if known is None:  # no base and no data-stage flags: this model's own answers define "known"
            known = [probe_hit(p, answer_of[i], data.spec.terms, data.behaviour) for i, p in enumerate(probes)]
        keep_known = [known[i] if p["kind"] != "target" else False for i, p in enumerate(probes)]
        t = time.perf_counter()
        scores = likelihood_pass(
            gen, tokenizer, likelihood_records(data, cfg, *loss_probes(data, cfg, known)), cfg, inference
        )
        seconds["likelihoods"] = time.perf_counter() - t
        metrics, items = probe_view(data, answer_of, known, keep_known, scores)
        metrics |= {f"mia_auc_{k}": v for k, v in mia_auc(scores["members"], scores["nonmembers"]).items()}
        metrics["forget_loss"] = mean_record_nll(scores["members"])
        metrics["retain_perplexity"] = perplexity(scores["retain"])
        metrics["forget_perplexity"] = math.exp(metrics["forget_loss"]) if metrics["forget_loss"] is not None else None
        out_items = {"probes": items, "mia": [{"set": s, **r} for s in ("members", "nonmembers") for r in scores[s]]}
        if data.verbatim:
            t = time.perf_counter()
            out_items["verbatim"] = _verbatim(gen, tokenizer, data, cfg, inference)
            metrics["verbatim_rouge_l"] = mean(r["rouge_l"] for r in out_items["verbatim"])
            seconds["verbatim"] = time.perf_counter() - t
        if parts:
            idx = attack_probes(data, known, cfg)
            runs = run_attacks(model, gen, tokenizer, data, cfg, idx, here, log, inference)
            if forked is not None:
                runs |= forked.result()
            out_items["attacks"], extra = {}, {}
            for part in parts:  # in the order of the parts, wherever they ran
                results, s, e = runs[part]
                out_items["attacks"] |= results
                seconds |= s
                extra |= e
            metrics |= attack_metrics(out_items["attacks"], idx, {i: items[i]["hit"] for i in idx}, is_base) | extra
    finally:
        if forked is not None:
            forked.close()
    return {"metrics": metrics, "items": out_items, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def _start_attacks(
    model,
    gen,
    tokenizer,
    data: EvalData,
    cfg: EvalConfig,
    known: list[bool] | None,
    parts: list[str],
    answering: bool,
    log: Callable[[str], None],
    inference: InferenceOptions,
) -> tuple[worker.Forked | None, list[str]]:
    """Start the attack parts that go to a second process (`split_attacks`), where `cfg.fork` allows it and the
    machine suits it (worker.available); returns (the running process or None, the parts left to this one).

    The attacks need only to know which probes are known, so with `known` they can start before the
    probes are answered (`answering`: this process answers them first)."""
    if not parts or known is None or not cfg.fork or not worker.available(gen.device):
        return None, parts
    idx = attack_probes(data, known, cfg)
    work = part_work(tokenizer, data, cfg, known, idx, hooks_of(model) is not None, answering)
    there, here = split_attacks(parts, work, torch.get_num_threads())
    if not there:
        return None, parts
    if "relearn" in there:
        log(f"Relearning attack: {cfg.relearn_steps} steps on forget records, in a second process ...")
    forked = worker.Forked(
        lambda: run_attacks(model, gen, tokenizer, data, cfg, idx, there, lambda msg: None, inference)
    )
    return forked, here


def _verbatim(gen, tokenizer, data: EvalData, cfg: EvalConfig, inference: InferenceOptions) -> list[dict]:
    """Greedy continuations of the forget documents' prefixes, with their ROUGE-L recall of the true text."""
    conts = generate(
        gen,
        tokenizer,
        [probe_prompt(tokenizer, v) for v in data.verbatim],
        max_new_tokens=VERBATIM_TOKENS,
        batch_size=cfg.batch_size,
        inference=inference,
    )
    return [
        {"prompt": v["prompt"], "continuation": c, "rouge_l": rouge_l_recall(c, v["continuation"])}
        for v, c in zip(data.verbatim, conts)
    ]


def evaluate_base(
    model,
    tokenizer,
    model_path,
    data: EvalData,
    cfg: EvalConfig | None = None,
    *,
    log: Callable[[str], None] = print,
    inference: InferenceOptions = DEFAULT,
) -> dict:
    """The base model's evaluation as a metrics.json document (`document`).

    The data stage's greedy probe answers stand in for the model's own when they are its own: the
    data was built from `model_path`, with as many new tokens per answer as cfg.max_new_tokens."""
    cfg = cfg or EvalConfig()
    reuse = (
        str(model_path) == str(data.built_from)
        and cfg.max_new_tokens == data.probe_tokens
        and all(p.get("base_answer") is not None for p in data.probes)
    )
    result = evaluate_model(
        model,
        tokenizer,
        data,
        cfg,
        is_base=True,
        log=log,
        inference=inference,
        answers=[p["base_answer"] for p in data.probes] if reuse else None,
    )
    return document(result, model_path, data, cfg)


def evaluate(
    model,
    data: str | Path | EvalData,
    *,
    against=None,
    oracle=None,
    config: EvalConfig | None = None,
    log: Callable[[str], None] = print,
    inference: InferenceOptions = DEFAULT,
) -> dict:
    """Evaluate `model` (path, hub id or LoadedModel) on the data directory `data`; returns the metrics.json
    document (report.metrics.write_metrics writes it with its metrics.md).

    `against`: the base model (path, hub id, LoadedModel) or its metrics.json document; it is
    evaluated with the same suite and decides which probes are known. `oracle`: a model that
    never learned the forget set (PrivLeak, forget quality).
    """
    from obliviate.models.loading import LoadedModel, load_model, resolve_model

    cfg = config or EvalConfig()
    data = data if isinstance(data, EvalData) else EvalData.from_dir(data)
    for spec in (model, against, oracle):  # a wrong path fails now, not after minutes of evaluation
        if isinstance(spec, str):
            resolve_model(spec)
    base_doc = None
    if isinstance(against, dict):
        base_doc = against
    elif against is not None:
        blm = against if isinstance(against, LoadedModel) else load_model(against)
        log(f"Evaluating the base model {blm.path} ...")
        base_doc = evaluate_base(blm.model, blm.tokenizer, blm.path, data, cfg, log=log, inference=inference)
        del blm
    oracle_doc = None
    if oracle is not None:
        olm = oracle if isinstance(oracle, LoadedModel) else load_model(oracle)
        log(f"Evaluating the oracle {olm.path} ...")
        r = evaluate_model(
            olm.model,
            olm.tokenizer,
            data,
            dataclasses.replace(cfg, attacks=()),
            base=base_doc,
            is_base=True,
            log=log,
            inference=inference,
        )
        oracle_doc = document(r, olm.path, data, cfg)
        del olm
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    log(f"Evaluating {lm.path} ...")
    # The model the data was built from has forgotten nothing: no relearning, nothing "recovered".
    result = evaluate_model(
        lm.model,
        lm.tokenizer,
        data,
        cfg,
        base=base_doc,
        log=log,
        is_base=str(lm.path) == str(data.built_from),
        inference=inference,
    )
    if oracle_doc is not None:
        with_oracle(result, oracle_doc)
    return document(result, lm.path, data, cfg, against=base_doc, oracle=oracle_doc)
