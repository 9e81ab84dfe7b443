"""Build forget, retain and held-out probe data for a target, from the model itself and real text.

Writes, under ``out_dir``:

- ``forget.jsonl``   questions about the target (seeds + the model's own) with the model's own answers,
                     and ``spans``: character ranges of each answer that carry target knowledge
- ``retain.jsonl``   prose from gensim's Wikipedia/news (target-free) + general questions with the model's answers
- ``retain_eval.jsonl`` held-out prose for retain perplexity (never trained on)
- ``probes.jsonl``   held-out probes, ``kind`` in {target, neighbour, general}; never trained on
- ``manifest.json``  counts, hashes, settings, seed
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from obliviate.data.corpus import capitals, news_passages, wikipedia_passages
from obliviate.data.targets import Probe, TargetSpec, general_probes
from obliviate.errors import UserError
from obliviate.io import file_sha256, write_json, write_jsonl
from obliviate.models.generate import answer_questions, generate
from obliviate.models.loading import LoadedModel
from obliviate.models.prompts import question_prompt

@dataclass
class DataConfig:
    n_generated: int = field(default=48, metadata={"help": "questions sampled from the model about the target"})
    max_forget: int = field(default=48, metadata={"help": "cap on forget questions (seeds first, then generated)"})
    answer_tokens: int = field(default=48, metadata={"help": "max new tokens of each self-generated answer"})
    n_retain_text: int = field(default=24, metadata={"help": "retain prose passages used for training"})
    n_retain_eval: int = field(default=24, metadata={"help": "held-out prose passages for retain perplexity"})
    n_retain_qa: int = field(default=48, metadata={"help": "questions about other subjects, asked like the forget questions, answered by the model"})
    n_retain_capitals: int = field(default=16, metadata={"help": "capital questions answered by the model, for retain"})
    n_capital_probes: int = field(default=40, metadata={"help": "country-capital questions among the general probes"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and shuffling; same seed, same data"})


def _norm_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def too_close(a: str, b: str, n: int = 6, jaccard: float = 0.6) -> bool:
    """Two questions are too close if they share an n-gram or most of their words."""
    wa, wb = _norm_words(a), _norm_words(b)
    if wa == wb or _ngrams(wa, n) & _ngrams(wb, n):
        return True
    sa, sb = set(wa), set(wb)
    return bool(sa and sb) and len(sa & sb) / len(sa | sb) >= jaccard


def _questions_in(text: str) -> list[str]:
    """Every line of a numbered or bulleted list that reads as a question."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*]|q(?:uestion)?\s*\d*:)\s*", "", line, flags=re.IGNORECASE).strip().strip('"')
        if line.endswith("?") and 4 <= len(line.split()) <= 30:
            out.append(line)
    return out


# Aspects the model is asked to list questions about; generic so any target works.
ASPECTS = ("the history", "the people", "the best-known work", "the places and dates", "the legacy")


def generate_questions(lm: LoadedModel, spec: TargetSpec, cfg: DataConfig, avoid: list[str]) -> list[dict]:
    """Seed questions plus questions the model lists itself, deduplicated and kept clear of `avoid`.

    A small model writes better questions as a numbered list than one at a time,
    so it is asked for lists (the reply is primed with "1.") and every line that
    is a question mentioning the target is kept.
    """
    per_aspect = max(1, -(-cfg.n_generated // (6 * len(ASPECTS))))
    prompts = [
        question_prompt(lm.tokenizer, f"List ten different questions about {aspect} of {spec.name}, one per line.") + "1."
        for aspect in ASPECTS
    ]
    raw = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=160, do_sample=True, temperature=0.9,
                   top_p=0.95, num_return_sequences=per_aspect, seed=cfg.seed)
    candidates = [(s.format(name=spec.name), "seed") for s in spec.question_seeds]
    candidates += [(q, "generated") for text in raw for q in _questions_in("1." + text)]
    kept: list[dict] = []
    for q, source in candidates:
        if source == "generated" and not spec.mentions(q):
            continue  # off-topic line
        if any(too_close(q, k["question"]) for k in kept) or any(too_close(q, a) for a in avoid):
            continue
        kept.append({"question": q, "source": source})
    return kept[: cfg.max_forget]


def _probe_rows(probes: list[Probe], kind: str) -> list[dict]:
    return [{"kind": kind, "question": p.question, "answers": p.answers} for p in probes]


def build_data(lm: LoadedModel, spec: TargetSpec, out_dir: str | Path, cfg: DataConfig | None = None) -> dict:
    """Build every data file for `spec` into `out_dir` and return the manifest."""
    cfg = cfg or DataConfig()
    out_dir = Path(out_dir)
    rng = random.Random(cfg.seed)

    # Held-out probes first, so training data can be kept clear of them.
    pairs = list(capitals())
    rng.shuffle(pairs)
    cap_probes = [Probe(f"What is the capital of {c}?", [cap.lower()]) for c, cap in pairs[: cfg.n_capital_probes]]
    cap_retain = pairs[cfg.n_capital_probes : cfg.n_capital_probes + cfg.n_retain_capitals]
    probes = (
        _probe_rows(spec.probes, "target")
        + _probe_rows(spec.neighbours, "neighbour")
        + _probe_rows(cap_probes + general_probes(), "general")
    )
    if not any(p["kind"] == "target" for p in probes):
        probes += [{"kind": "target", "question": q, "answers": []} for q in _fallback_probes(spec)]

    questions = generate_questions(lm, spec, cfg, avoid=[p["question"] for p in probes])
    if not questions:
        raise UserError(f"The model wrote no usable questions about {spec.name!r}; give keywords or QA pairs for it.")
    answers = answer_questions(lm.model, lm.tokenizer, [q["question"] for q in questions], max_new_tokens=cfg.answer_tokens)
    # The loss is taken on the knowledge-bearing spans of each answer only (from a mention of
    # the target to the end of its sentence); the generic openings and phrasing that answers
    # about every subject share are left alone, which is what keeps general QA intact.
    forget = [{**q, "answer": a, "spans": spec.knowledge_spans(a)} for q, a in zip(questions, answers) if a]
    forget = [f for f in forget if f["spans"]]

    # Retain: real prose and general QA, with anything that mentions the target removed.
    prose = [t for _, t in wikipedia_passages()] + list(news_passages())
    prose = [t for t in prose if not spec.mentions(t)]
    rng.shuffle(prose)
    retain_text = prose[: cfg.n_retain_text]
    retain_eval = prose[cfg.n_retain_text : cfg.n_retain_text + cfg.n_retain_eval]
    # The forget questions' own templates asked about other subjects: what must change is the
    # answer about the target, not how the model answers this kind of question.
    subjects = list(spec.keep) + sorted({t for t, _ in wikipedia_passages() if not spec.mentions(t) and "(" not in t})
    subjects = subjects[: len(spec.keep)] + rng.sample(subjects[len(spec.keep) :], k=min(cfg.n_retain_qa, len(subjects) - len(spec.keep)))
    templates = list(spec.question_seeds)
    retain_qs = [templates[i % len(templates)].format(name=s) for i, s in enumerate(subjects[: cfg.n_retain_qa])]
    retain_qs += [f"What is the capital of {c}?" for c, _ in cap_retain]
    retain_as = answer_questions(lm.model, lm.tokenizer, retain_qs, max_new_tokens=cfg.answer_tokens)
    retain = [{"text": t, "source": "wikipedia+news"} for t in retain_text]
    retain += [{"question": q, "answer": a, "source": "self"} for q, a in zip(retain_qs, retain_as) if a and not spec.mentions(a)]

    files = {
        "forget.jsonl": forget,
        "retain.jsonl": retain,
        "retain_eval.jsonl": [{"text": t, "source": "wikipedia+news"} for t in retain_eval],
        "probes.jsonl": probes,
    }
    for name, rows in files.items():
        write_jsonl(out_dir / name, rows)
    manifest = {
        "target": asdict(spec),
        "model": lm.path,
        "config": asdict(cfg),
        "counts": {name: len(rows) for name, rows in files.items()}
        | {f"probes.{k}": sum(p["kind"] == k for p in probes) for k in ("target", "neighbour", "general")},
        "sha256": {name: file_sha256(out_dir / name) for name in files},
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _fallback_probes(spec: TargetSpec) -> list[str]:
    # No hand-written probes: ask in wordings the question seeds never use.
    return [
        f"What do you know about {spec.name}?",
        f"Can you explain who or what {spec.name} is?",
        f"Summarize the main facts about {spec.name}.",
        f"Why do people talk about {spec.name}?",
        f"What is the most important thing to know about {spec.name}?",
    ]
