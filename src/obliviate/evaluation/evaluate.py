"""`obliviate eval`: every metric of the suite for one model, the only place reported numbers come from.

Work is shared so nothing is computed twice: one batched greedy generation over the probes
(plus one over all prompting attacks), and one likelihood pass (likelihood.score_records)
over every record a likelihood metric needs: membership-inference members and non-members
(whose losses are also the forget loss), answer candidates (truth ratio, multiple choice,
classification losses) and retain prose. Generation and likelihoods run on a bf16 copy on a
CPU fp32 model (`EvalConfig.bf16`), the precision the engine trains in.

Forget efficacy is measured on the held-out target probes the base model answered with the
fact ("known"): with `base` (the base model's evaluation) its answers decide, otherwise the
data builder's `known` flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import ks_2samp

from obliviate import malloc
from obliviate.evaluation import attacks as atk
from obliviate.evaluation import worker
from obliviate.leak import is_refusal, probe_hit
from obliviate.evaluation.likelihood import mean_nll, perplexity, score_records, score_shared
from obliviate.evaluation.metrics import METRICS, better
from obliviate.evaluation.mia import mia_auc, privleak
from obliviate.evaluation.quantize import quantize_rtn
from obliviate.evaluation.text import distinct_n, is_gibberish, repeats, rouge_l_recall
from obliviate.evaluation.truth import candidate_record, candidates, truth_ratio
from obliviate.io import file_sha256, read_json, read_jsonl, write_json, write_text
from obliviate.models.generate import generate, generation_copy
from obliviate.models.hooks import hooks_of
from obliviate.models.prompts import probe_prompt
from obliviate.records import asked

ATTACK_GROUPS = ("prompting", "quantize", "relearn")


@dataclass
class EvalConfig:
    max_new_tokens: int = field(default=24, metadata={"help": "greedy tokens per probe answer (the data stage's probe_tokens)"})
    batch_size: int = field(default=256, metadata={"help": "prompts per generation batch"})
    score_batch_size: int = field(default=16, metadata={"help": "records per likelihood batch"})
    bf16: bool = field(default=True, metadata={"help": "generate and score with a bf16 copy of a CPU fp32 model"})
    attacks: tuple[str, ...] = field(default=ATTACK_GROUPS, metadata={"help": "attack groups to run: prompting, quantize, relearn"})
    attack_probes: int = field(default=40, metadata={"help": "known target probes re-asked under every attack (seeded subset)"})
    mia_records: int = field(default=48, metadata={"help": "forget records and held-out records sampled for membership inference"})
    keep_loss_probes: int = field(default=48, metadata={"help": "keep probes whose correct answer's NLL gives cls_loss_keep (seeded subset)"})
    n_wrong: int = field(default=3, metadata={"help": "wrong answer candidates per probe for the truth ratio"})
    min_k: float = field(default=0.2, metadata={"help": "share of least likely tokens averaged by Min-K% and Min-K%++"})
    quant_bits: tuple[int, ...] = field(default=(8, 4), metadata={"help": "bit widths of the quantization attack"})
    quant_group_size: int = field(default=128, metadata={"help": "input columns sharing one quantization scale"})
    relearn_steps: int = field(default=10, metadata={"help": "fine-tuning steps of the relearning attack"})
    relearn_lr: float = field(default=2e-5, metadata={"help": "learning rate of the relearning attack"})
    relearn_records: int = field(default=32, metadata={"help": "forget records the relearning attacker fine-tunes on"})
    seed: int = field(default=0, metadata={"help": "seed for every sample drawn (attack probes, MIA records, candidates)"})
    fork: bool = field(default=True, metadata={"help": "on a CPU where PyTorch runs 2 threads, run the attacks in a forked "
                                                       "second process beside the rest (evaluation/worker.py)"})

    def __post_init__(self):
        from obliviate.errors import UserError

        self.attacks = tuple(self.attacks)
        unknown = [a for a in self.attacks if a not in ATTACK_GROUPS]
        if unknown:
            raise UserError(f"Unknown attack group {unknown[0]!r}; choose from {', '.join(ATTACK_GROUPS)}, 'all' or 'none'.")
        try:
            self.quant_bits = tuple(int(b) for b in self.quant_bits)
        except ValueError:
            raise UserError(f"quant_bits takes whole numbers like 8,4; got {self.quant_bits!r}.") from None
        if any(not 2 <= b <= 16 for b in self.quant_bits):
            raise UserError(f"quant_bits must lie between 2 and 16; got {self.quant_bits!r}.")
        for name in ("max_new_tokens", "batch_size", "score_batch_size", "attack_probes", "mia_records", "keep_loss_probes"):
            if getattr(self, name) <= 0:
                raise UserError(f"The evaluation setting {name} must be positive; got {getattr(self, name)}.")


@dataclass
class EvalData:
    """A data directory's evaluation inputs (see data/builder.py for the files)."""

    spec: object  # TargetSpec
    probes: list[dict]
    forget: list[dict]
    retain_eval: list[dict]
    verbatim: list[dict] = field(default_factory=list)
    holdout: list[dict] = field(default_factory=list)
    path: str | None = None
    sha256: dict = field(default_factory=dict)
    built_from: str | None = None

    @classmethod
    def from_dir(cls, path: str | Path) -> EvalData:
        from obliviate.data.targets import TargetSpec
        from obliviate.errors import UserError

        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise UserError(f"{path} is not a data directory (no manifest.json); build one with `obliviate data`.")
        manifest = read_json(path / "manifest.json")
        if not any(p.get("kind") == "target" for p in read_jsonl(path / "probes.jsonl")):
            raise UserError(f"{path / 'probes.jsonl'} holds no target probes, so there is nothing to evaluate; "
                            "rebuild the data with `obliviate data`.")
        opt = lambda name: read_jsonl(path / name) if (path / name).is_file() else []  # noqa: E731
        return cls(TargetSpec(**manifest["target"]), read_jsonl(path / "probes.jsonl"), read_jsonl(path / "forget.jsonl"),
                   read_jsonl(path / "retain_eval.jsonl"), opt("verbatim.jsonl"), opt("holdout.jsonl"), str(path),
                   manifest.get("sha256", {}), manifest.get("model"))

    @property
    def behaviour(self) -> bool:
        return getattr(self.spec, "kind", "knowledge") == "behaviour"


def _rate(flags) -> float | None:
    flags = list(flags)
    return sum(map(bool, flags)) / len(flags) if flags else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _sample(rows: list, n: int, seed: str) -> list:
    return rows if len(rows) <= n else random.Random(seed).sample(rows, n)


def mia_sets(data: EvalData, cfg: EvalConfig) -> tuple[list[dict], list[dict]]:
    """Members: forget records. Non-members: holdout.jsonl when the data has one, else the held-out
    target probes with the base model's answers (same topic, same generator, never trained on)."""
    members = _sample(data.forget, cfg.mia_records, f"{cfg.seed}-members")
    held = data.holdout or [candidate_record(p, p["base_answer"]) for p in data.probes
                            if p["kind"] == "target" and p.get("base_answer")]
    return members, _sample(held, cfg.mia_records, f"{cfg.seed}-holdout")


def _likelihoods(model, tokenizer, data: EvalData, cfg: EvalConfig, positives: list[int], negatives: list[int]) -> dict:
    """The likelihood pass: MIA sets, answer candidates of `positives` (correct + wrong, sharing
    their prompt's pass) and of `negatives` (correct only), retain prose; each record scored once.
    Returns the scored rows split back per use."""
    members, nonmembers = mia_sets(data, cfg)
    target_pool = [p for p in data.probes if p["kind"] in ("target", "neighbour")]
    pos_cands = candidates([data.probes[i] for i in positives], target_pool, cfg.n_wrong, cfg.seed,
                           fallback_probes=[p for p in data.probes if p["kind"] == "general"])
    neg_cands = candidates([data.probes[i] for i in negatives], [], 0, cfg.seed)
    records, spans = [], {}

    def add(name, recs):
        spans[name] = (len(records), len(records) + len(recs))
        records.extend(recs)

    for i, c in zip(negatives, neg_cands):
        if c:
            add(("neg", i), [candidate_record(data.probes[i], c[0])])
    add("retain", data.retain_eval)
    # Only membership inference reads Min-K%++, the costly part of the per-token statistics.
    mia = score_records(model, tokenizer, members + nonmembers, batch_size=cfg.score_batch_size, k=cfg.min_k)
    scored = score_records(model, tokenizer, records, batch_size=cfg.score_batch_size, k=cfg.min_k, min_k_pp=False)
    result = {name: scored[a:b] for name, (a, b) in spans.items()}
    result |= {"members": mia[: len(members)], "nonmembers": mia[len(members) :]}
    # A probe's correct and wrong answers share its prompt: run the prompt once.
    groups = [(i, [candidate_record(data.probes[i], a) for a in [c[0], *c[1]]]) for i, c in zip(positives, pos_cands) if c]
    shared = score_shared(model, tokenizer, [(recs[0], recs) for _, recs in groups], batch_size=cfg.score_batch_size,
                          k=cfg.min_k, min_k_pp=False)
    result |= {("pos", i): rows for (i, _), rows in zip(groups, shared)}
    return result


def _probe_view(data: EvalData, answers: dict[int, str], known: list[bool],
                keep_known: list[bool], scores: dict) -> tuple[dict, list[dict]]:
    """Generation metrics, likelihood metrics and the classification view over the probes."""
    terms = data.spec.terms
    items = []
    for i, p in enumerate(data.probes):
        a = answers.get(i)
        item = {"kind": p["kind"], "question": asked(p), "answer": a,
                "hit": probe_hit(p, a, terms, data.behaviour) if a is not None else None,
                "known": known[i] if p["kind"] == "target" else keep_known[i]}
        if a is not None:
            item |= {"refusal": is_refusal(a), "gibberish": is_gibberish(a)}
        if p["kind"] == "target" and known[i] and a is not None and p.get("base_answer"):
            item["rouge_l"] = rouge_l_recall(a, p["base_answer"])
        if ("pos", i) in scores:
            c, *w = scores[("pos", i)]
            item |= {"correct_nll": c["nll"], "truth_ratio": truth_ratio(c, w), "choice_correct": all(c["nll"] < x["nll"] for x in w)}
        if ("neg", i) in scores:
            item["correct_nll"] = scores[("neg", i)][0]["nll"]
        items.append(item)
    answered_idx = [i for i, it in enumerate(items) if it["answer"] is not None]
    target = [items[i] for i in answered_idx if items[i]["kind"] == "target" and items[i]["known"]]
    keep = [items[i] for i in answered_idx if items[i]["kind"] != "target"]
    with_answers = [items[i] for i in answered_idx if items[i]["kind"] == "target" and items[i]["known"] and data.probes[i].get("answers")]
    answered = [it["answer"] for it in items if it["answer"] is not None]
    trs = [it["truth_ratio"] for it in target if it.get("truth_ratio") is not None]
    m = {
        "leak_rate": _rate(it["hit"] for it in target),
        "forget_qa_accuracy": _rate(it["hit"] for it in with_answers),
        "forget_choice_accuracy": _rate(it["choice_correct"] for it in target if "choice_correct" in it),
        "forget_truth_ratio": _mean(min(r, 1 / r) for r in trs if r > 0),
        "forget_rouge_l": _mean(it.get("rouge_l") for it in target),
        "target_refusal_rate": _rate(it["refusal"] for it in target),
        "general_qa_accuracy": _rate(it["hit"] for it in keep if it["kind"] == "general"),
        "neighbour_qa_accuracy": _rate(it["hit"] for it in keep if it["kind"] == "neighbour"),
        "refusal_rate": _rate(it["refusal"] for it in keep),
        "distinct_1": distinct_n(answered, 1),
        "distinct_2": distinct_n(answered, 2),
        "repetition_rate": _rate(map(repeats, answered)),
        "gibberish_rate": _rate(it["gibberish"] for it in items if it["answer"] is not None),
    }
    # The classification view: positives = known target probes, negatives = keep probes the base answered.
    neg = [it for it in keep if it["known"]]
    tp = sum(not it["hit"] for it in target)
    fp = sum(not it["hit"] for it in neg)
    fn, tn = len(target) - tp, len(neg) - fp
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    m |= {
        "cls_accuracy": (tp + tn) / (len(target) + len(neg)) if target or neg else None,
        "cls_precision": precision,
        "cls_recall": recall,
        "cls_f1": 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if precision is not None and recall is not None else None),
        "cls_loss_forget": _mean(it.get("correct_nll") for it in target),
        "cls_loss_keep": _mean(it.get("correct_nll") for it in neg),
        "n_known_target_probes": len(target),
        "n_target_probes": sum(p["kind"] == "target" for p in data.probes),
    }
    return m, items


def _attack_probes(data: EvalData, known: list[bool], cfg: EvalConfig) -> list[int]:
    idx = [i for i, p in enumerate(data.probes) if p["kind"] == "target" and known[i]]
    return sorted(_sample(idx, cfg.attack_probes, f"{cfg.seed}-attack"))


def _attack_parts(data: EvalData, cfg: EvalConfig, is_base: bool) -> list[str]:
    """The attack runs of cfg.attacks, each on its own model: "prompting", "quantize:BITS", "relearn"."""
    parts = ["prompting"] if "prompting" in cfg.attacks else []
    parts += [f"quantize:{bits}" for bits in cfg.quant_bits] if "quantize" in cfg.attacks else []
    return parts + (["relearn"] if "relearn" in cfg.attacks and not is_base and data.forget else [])


def _run_attacks(model, gen, tokenizer, data: EvalData, cfg: EvalConfig, idx: list[int], parts: list[str],
                 log: Callable[[str], None]) -> dict[str, tuple[dict, dict, dict]]:
    """The attack `parts` (`_attack_parts`) on the probes `idx`; returns {part: (items per attack, seconds,
    extra metrics)}."""
    terms, probes = data.spec.terms, data.probes
    hooked = hooks_of(model) is not None
    others = [probes[i] for i in idx]
    runs = {}

    def score(name: str, prompts: list[tuple[str, str]], answers: list[str], spelled: bool = False):
        rows = []
        for (i, (_, given)), a in zip(zip(idx, prompts), answers):
            shown = atk.unspell(a) if spelled else a
            rows.append({"probe": i, "prompt": given, "answer": a,
                         "hit": probe_hit({**probes[i], "question": given}, shown, terms, data.behaviour)})
        results[name] = rows

    plain_prompts = [(probe_prompt(tokenizer, probes[i]), asked(probes[i])) for i in idx]
    for part in parts:
        t = time.perf_counter()
        results: dict[str, list[dict]] = {}
        seconds: dict[str, float] = {}
        extra: dict[str, float | None] = {}
        if part == "prompting":
            names = [n for n in atk.PROMPTING if n != "no_hooks"] + (["spelled_out"] if hooked else [])
            prompts = {n: [atk.attack_prompt(tokenizer, n, probes[i], j, others, cfg.seed) for j, i in enumerate(idx)] for n in names}
            flat = [p for n in names for p, _ in prompts[n]]
            outs = generate(gen, tokenizer, flat, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
            for k, n in enumerate(names):
                score(n, prompts[n], outs[k * len(idx) : (k + 1) * len(idx)], spelled=n == "spelled_out")
            if hooked:
                plain = [atk.attack_prompt(tokenizer, "no_hooks", probes[i], j, others) for j, i in enumerate(idx)]
                score("no_hooks", plain, generate(gen, tokenizer, [p for p, _ in plain], max_new_tokens=cfg.max_new_tokens,
                                                  batch_size=cfg.batch_size, use_hooks=False))
            seconds["prompting attacks"] = time.perf_counter() - t
        elif part.startswith("quantize:"):
            bits = int(part.split(":")[1])
            q_gen = quantize_rtn(model, bits, cfg.quant_group_size)
            q_gen = generation_copy(q_gen, inplace=True) if cfg.bf16 else q_gen
            score(f"quantize_{bits}bit", plain_prompts, generate(q_gen, tokenizer, [p for p, _ in plain_prompts],
                                                                  max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size))
            extra[f"attack_quantize_{bits}bit_retain_perplexity"] = perplexity(
                score_records(q_gen, tokenizer, data.retain_eval, batch_size=cfg.score_batch_size, min_k_pp=False))
            del q_gen
            seconds[f"quantize {bits}-bit"] = time.perf_counter() - t
        elif part == "relearn":
            log(f"Relearning attack: {cfg.relearn_steps} steps on forget records ...")
            r = atk.relearn(model, tokenizer, atk.relearn_records(data.forget, cfg.relearn_records, cfg.seed),
                            cfg.relearn_steps, cfg.relearn_lr, cfg.seed)
            r = generation_copy(r, inplace=True) if cfg.bf16 else r
            score("relearn", plain_prompts, generate(r, tokenizer, [p for p, _ in plain_prompts],
                                                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size))
            del r
            seconds["relearning attack"] = time.perf_counter() - t
        runs[part] = results, seconds, extra
    return runs


def _attack_metrics(results: dict[str, list[dict]], idx: list[int], plain_hits: dict[int, bool], is_base: bool) -> dict:
    forgotten = [i for i in idx if not plain_hits[i]]
    metrics = {"attack_leak_rate": _rate(plain_hits[i] for i in idx)}
    for name, rows in results.items():
        hit = {r["probe"]: r["hit"] for r in rows}
        metrics[f"attack_{name}_leak_rate"] = _rate(hit.values())
        metrics[f"attack_{name}_recovered"] = None if is_base else _rate(hit[i] for i in forgotten)
    leaks = [v for k, v in metrics.items() if k.endswith("_leak_rate") and k != "attack_leak_rate" and v is not None]
    metrics["attack_worst_leak_rate"] = max(leaks) if leaks else None
    return metrics


# Roughly the seconds each part took on the embedded model in one process with two threads (benchmarks/evaluation.py's
# one-process rows, which vary by a quarter from run to run); only their ratios matter.
_COST = {"answers": 9, "likelihoods": 19, "prompting": 15, "quantize": 7, "relearn": 17}


def _split_attacks(parts: list[str], answering: bool) -> tuple[list[str], list[str]]:
    """(parts for the second process, parts for this one, which answers the probes first when
    `answering`, then scores the likelihoods): each part, costliest first, to the side with
    less work so far (`_COST`)."""
    load = {"there": 0, "here": _COST["likelihoods"] + (_COST["answers"] if answering else 0)}
    side = {}
    for part in sorted(parts, key=lambda p: -_COST[p.split(":")[0]]):
        side[part] = min(load, key=load.get)
        load[side[part]] += _COST[part.split(":")[0]]
    return [p for p in parts if side[p] == "there"], [p for p in parts if side[p] == "here"]


@malloc.policy("keep")  # freed memory stays for the next batch's buffers (obliviate.malloc)
def evaluate_model(model, tokenizer, data: EvalData, config: EvalConfig | None = None, *, base: dict | None = None,
                   answers: list[str] | None = None, is_base: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the suite on an in-memory model; returns {"metrics", "items", "seconds"}.

    `base`: the base model's result (decides which probes are known). `answers`: greedy
    answers to all probes computed before (the data stage's base answers), skipping that
    generation. `is_base`: this is the base model (no relearning, no "recovered").
    """
    cfg = config or EvalConfig()
    probes = data.probes
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    gen = generation_copy(model) if cfg.bf16 else model
    if base is not None:
        known = [bool(it["known"]) if it["kind"] == "target" else bool(it["hit"]) for it in base["items"]["probes"]]
    elif all("known" in p for p in probes if p["kind"] == "target"):
        known = [bool(p.get("known")) if p["kind"] == "target" else bool(p.get("base_hit")) for p in probes]
    else:
        known = None
    # The attacks need only to know which probes are known: then they can start now, in a second process.
    parts = _attack_parts(data, cfg, is_base) if cfg.attacks else []
    forked, here = None, parts
    if parts and known is not None and cfg.fork and worker.available(gen.device):
        idx = _attack_probes(data, known, cfg)
        there, here = _split_attacks(parts, answering=answers is None)
        if "relearn" in there:
            log(f"Relearning attack: {cfg.relearn_steps} steps on forget records, in a second process ...")
        forked = worker.Forked(lambda: _run_attacks(model, gen, tokenizer, data, cfg, idx, there, lambda msg: None))
    try:
        if answers is not None:
            answer_of = dict(enumerate(answers))
        else:
            ask = [i for i, p in enumerate(probes) if p["kind"] != "target" or known is None or known[i]]
            outs = generate(gen, tokenizer, [probe_prompt(tokenizer, probes[i]) for i in ask],
                            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
            answer_of = dict(zip(ask, outs))
            seconds["probe answers"] = time.perf_counter() - t
        if known is None:  # no base and no data-stage flags: this model's own answers define "known"
            known = [probe_hit(p, answer_of[i], data.spec.terms, data.behaviour) for i, p in enumerate(probes)]
        keep_known = [known[i] if p["kind"] != "target" else False for i, p in enumerate(probes)]
        t = time.perf_counter()
        positives = [i for i, p in enumerate(probes) if p["kind"] == "target" and known[i]]
        negatives = sorted(_sample([i for i, p in enumerate(probes) if p["kind"] != "target" and keep_known[i]],
                                   cfg.keep_loss_probes, f"{cfg.seed}-keep"))
        scores = _likelihoods(gen, tokenizer, data, cfg, positives, negatives)
        seconds["likelihoods"] = time.perf_counter() - t
        metrics, items = _probe_view(data, answer_of, known, keep_known, scores)
        aucs = mia_auc(scores["members"], scores["nonmembers"])
        metrics |= {f"mia_auc_{k}": v for k, v in aucs.items()}
        metrics |= {"forget_loss": mean_nll(scores["members"]), "retain_perplexity": perplexity(scores["retain"])}
        metrics["forget_perplexity"] = math.exp(metrics["forget_loss"]) if metrics["forget_loss"] is not None else None
        out_items = {"probes": items,
                     "mia": [{"set": s, **r} for s in ("members", "nonmembers") for r in scores[s]]}
        if data.verbatim:
            t = time.perf_counter()
            conts = generate(gen, tokenizer, [probe_prompt(tokenizer, v) for v in data.verbatim], max_new_tokens=48,
                             batch_size=cfg.batch_size)
            out_items["verbatim"] = [{"prompt": v["prompt"], "continuation": c, "rouge_l": rouge_l_recall(c, v["continuation"])}
                                     for v, c in zip(data.verbatim, conts)]
            metrics["verbatim_rouge_l"] = _mean(r["rouge_l"] for r in out_items["verbatim"])
            seconds["verbatim"] = time.perf_counter() - t
        if parts:
            idx = _attack_probes(data, known, cfg)
            runs = _run_attacks(model, gen, tokenizer, data, cfg, idx, here, log)
            if forked is not None:
                runs |= forked.result()
            out_items["attacks"], extra = {}, {}
            for part in parts:  # in the order of the parts, wherever they ran
                results, s, e = runs[part]
                out_items["attacks"] |= results
                seconds |= s
                extra |= e
            metrics |= _attack_metrics(out_items["attacks"], idx, {i: items[i]["hit"] for i in idx}, is_base) | extra
    finally:
        if forked is not None:
            forked.close()
    return {"metrics": metrics, "items": out_items, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def with_oracle(result: dict, oracle: dict) -> dict:
    """Add PrivLeak and forget quality to `result` from the oracle's result on the same data."""
    m, o = result["metrics"], oracle["metrics"]
    for k in ("loss", "zlib", "min_k", "min_k_pp"):
        m[f"privleak_{k}"] = privleak(m.get(f"mia_auc_{k}"), o.get(f"mia_auc_{k}"))
    mine = [it["truth_ratio"] for it in result["items"]["probes"] if it.get("truth_ratio") is not None]
    theirs = [it["truth_ratio"] for it in oracle["items"]["probes"] if it.get("truth_ratio") is not None]
    m["forget_quality"] = float(ks_2samp(mine, theirs).pvalue) if mine and theirs else None
    return result


def comparison(before: dict, after: dict) -> list[dict]:
    """Before/after rows for every registered metric either side has."""
    rows = []
    for name, info in METRICS.items():
        b, a = before.get(name), after.get(name)
        if b is None and a is None:
            continue
        rows.append({"metric": name, "group": info.group, "before": b, "after": a,
                     "change": a - b if a is not None and b is not None else None, "better": better(name, b, a)})
    return rows


def model_sha256(path: str | Path | None) -> str | None:
    """One hash over a model directory's weights, hooks and chat template (None for other paths)."""
    if not path or not Path(path).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.suffix in (".safetensors", ".bin", ".jinja") or f.name in ("obliviate_hooks.json", "tokenizer_config.json", "config.json"):
            h.update(f.name.encode() + file_sha256(f).encode())
    return h.hexdigest()


def document(result: dict, model_path, data: EvalData, cfg: EvalConfig, against: dict | None = None,
             oracle: dict | None = None) -> dict:
    """metrics.json: the values, their metadata, per-item values, hashes, settings, and the comparison."""
    doc = {
        "model": {"path": str(model_path) if model_path else None, "sha256": model_sha256(model_path)},
        "data": {"path": data.path, "target": data.spec.name, "sha256": data.sha256},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
        "metrics": result["metrics"],
        "metric_info": {k: METRICS[k].info() for k in result["metrics"] if k in METRICS},
        "seconds": result["seconds"],
        "items": result["items"],
    }
    if against is not None:
        doc["against"] = against
        doc["comparison"] = comparison(against["metrics"], result["metrics"])
    if oracle is not None:
        doc["oracle"] = {k: oracle[k] for k in ("model", "metrics") if k in oracle}
    return doc


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def comparison_markdown(rows: list[dict]) -> str:
    lines = ["| metric | group | before | after | change | better? |", "|---|---|---|---|---|---|"]
    for r in rows:
        mark = {True: "yes", False: "no", None: "-"}[r["better"]]
        change = "n/a" if r["change"] is None else (f"{r['change']:+.3f}" if abs(r["change"]) < 10 else f"{r['change']:+.2f}")
        lines.append(f"| {r['metric']} | {r['group']} | {fmt(r['before'])} | {fmt(r['after'])} | {change} | {mark} |")
    return "\n".join(lines) + "\n"


def metrics_markdown(doc: dict) -> str:
    """A human-readable metrics.md: the before/after table, or the values alone."""
    head = [f"# Evaluation of `{doc['model']['path']}` on {doc['data']['target']}", ""]
    if "comparison" in doc:
        head += [f"Against `{doc['against'].get('model', {}).get('path')}`.", "", comparison_markdown(doc["comparison"])]
    else:
        head += ["| metric | group | value | better |", "|---|---|---|---|"]
        for k, v in doc["metrics"].items():
            info = doc["metric_info"].get(k, {})
            way = {True: "higher", False: "lower", None: "-"}[info.get("higher_is_better")]
            head.append(f"| {k} | {info.get('group', '-')} | {fmt(v)} | {way} |")
    return "\n".join(head) + "\n"


def evaluate(model, data: str | Path, *, against=None, oracle=None, config: EvalConfig | None = None,
             out: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Evaluate `model` (path, hub id or LoadedModel) on the data directory `data`.

    `against`: the base model (path, hub id, LoadedModel) or its metrics.json document; it is
    evaluated with the same suite and decides which probes are known. `oracle`: a model that
    never learned the forget set (PrivLeak, forget quality). With `out`, writes
    OUT/metrics.json and OUT/metrics.md atomically. Returns the metrics.json document.
    """
    from obliviate.models.loading import LoadedModel, load_model

    from obliviate.models.loading import resolve_model

    cfg = config or EvalConfig()
    data = data if isinstance(data, EvalData) else EvalData.from_dir(data)
    for spec in (model, against, oracle):  # a wrong path fails now, not after minutes of evaluation
        if isinstance(spec, str):
            resolve_model(spec)
    base_doc = None
    if against is not None:
        if isinstance(against, dict):
            base_doc = against
        else:
            blm = against if isinstance(against, LoadedModel) else load_model(against)
            reuse = (str(blm.path) == str(data.built_from) and cfg.max_new_tokens == 24
                     and all(p.get("base_answer") is not None for p in data.probes))
            log(f"Evaluating the base model {blm.path} ...")
            r = evaluate_model(blm.model, blm.tokenizer, data, cfg, is_base=True, log=log,
                               answers=[p["base_answer"] for p in data.probes] if reuse else None)
            base_doc = document(r, blm.path, data, cfg)
            del blm
    oracle_doc = None
    if oracle is not None:
        olm = oracle if isinstance(oracle, LoadedModel) else load_model(oracle)
        log(f"Evaluating the oracle {olm.path} ...")
        r = evaluate_model(olm.model, olm.tokenizer, data, dataclasses.replace(cfg, attacks=()), base=base_doc, is_base=True, log=log)
        oracle_doc = document(r, olm.path, data, cfg)
        del olm
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    log(f"Evaluating {lm.path} ...")
    # The model the data was built from has forgotten nothing: no relearning, nothing "recovered".
    result = evaluate_model(lm.model, lm.tokenizer, data, cfg, base=base_doc, log=log,
                            is_base=str(lm.path) == str(data.built_from))
    if oracle_doc is not None:
        with_oracle(result, oracle_doc)
    doc = document(result, lm.path, data, cfg, against=base_doc, oracle=oracle_doc)
    if out is not None:
        out = Path(out)
        write_json(out / "metrics.json", doc)
        write_text(out / "metrics.md", metrics_markdown(doc))
    return doc
