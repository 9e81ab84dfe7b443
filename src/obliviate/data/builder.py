"""Build forget, retain, alternative-answer and held-out probe data for a target.

The model itself is the source of what must be forgotten: it writes questions
about the target, answers them (greedy and sampled), and completion prompts are
cut from its answers. Writes, under ``out_dir``:

- ``probes.jsonl``      held-out probes, ``kind`` in {target, neighbour, general}, each with the
                        base model's answer; target probes carry ``known`` (the base model revealed
                        the fact: only those count for the leak rate); ``split`` is validation or
                        evaluation (data.splits). Never trained on.
- ``forget.jsonl``      the target's questions with the model's answers (``spans``: character ranges
                        that carry target knowledge), completions cut from them, given QA pairs and
                        document passages
- ``alt.jsonl``         alternative answers to the forget questions, ``kind`` in ALT_KINDS
- ``retain.jsonl``      target-free Wikipedia / news prose, the model's answers to other questions, and
                        neighbour records (``source`` "neighbour", with ``weight``: data.neighbours)
- ``retain_eval.jsonl`` held-out prose for retain perplexity
- ``verbatim.jsonl``    document prefixes with their true continuation (document targets only)
- ``manifest.json``     counts, hashes, generation settings, seed, and the held-out check

Same model, spec, config and seed: same files.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from obliviate import malloc
from obliviate.data.corpus import capitals, news_passages, wikipedia_passages
from obliviate.data.documents import read_passages, read_qa
from obliviate.data.neighbours import neighbour_retain
from obliviate.data.overlap import Overlap, too_close
from obliviate.data.splits import assign_splits, split_counts
from obliviate.data.targets import Probe, TargetSpec, general_probes
from obliviate.errors import UserError
from obliviate.io import file_sha256, write_json, write_jsonl
from obliviate.leak import is_refusal, probe_hit
from obliviate.models.generate import answer_probes, generate, generation_copy
from obliviate.models.loading import LoadedModel, weights_hash
from obliviate.models.prompts import question_prompt
from obliviate.records import asked, response

ALT_KINDS = ("guardrail", "negation", "other_subject", "anchored", "refusal", "mismatch")

ALT_HELP = {
    "guardrail": (
        "the model's own answer when told to answer without the target, cut before the first sentence that names "
        "one of its terms (synthetic-data seed)"
    ),
    "negation": "a reply that denies knowing the target (the Beatles notebook seed's negation dataset)",
    "other_subject": (
        "the model's answer to the same question about a close subject that must be kept (the notebook seed's "
        "other-bands dataset)"
    ),
    "anchored": "the model's answer with target terms swapped for generic ones (Who's Harry Potter anchored terms)",
    "refusal": "a harmless refusal",
    "mismatch": "the model's answer to an unrelated question (Yao et al. 2023's random normal answers)",
}

NEGATIONS = [
    "I'm not aware of anything by that name, so I can't say anything about it.",
    "That doesn't ring a bell. As far as I know, there is nothing well known by that name.",
    "I have no knowledge of that. It may not exist, or it is too obscure for me to know.",
    "I don't recognise that name; I can't give you any facts about it.",
    "As far as I can tell, there is no such thing that I know of.",
    "Nothing comes to mind about that. I don't have any information on it.",
]

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I can't answer that question.",
    "I'm not able to provide information on that topic.",
    "Sorry, I can't share anything about that.",
]

GUARDRAIL = (
    "You know nothing about {name}. Never mention {name} or anything connected to it ({terms}). "
    "If the question is about it, answer in general terms about something else, or say you don't know."
)

# Aspects the model is asked to list questions about; generic so any target works.
ASPECTS = (
    "the history",
    "the people",
    "the best-known work",
    "the places and dates",
    "the legacy",
    "the early years",
    "the most famous moments",
    "the style",
    "the influence",
    "surprising facts",
)


@dataclass
class DataConfig:
    n_generated: int = field(default=64, metadata={"help": "questions the model is asked to write about the target"})
    max_forget: int = field(default=64, metadata={"help": "cap on forget questions (seeds first, then generated)"})
    n_samples: int = field(default=2, metadata={"help": "sampled answers per forget question, beside the greedy one"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature for questions and sampled answers"})
    answer_tokens: int = field(default=40, metadata={"help": "max new tokens of each self-generated answer"})
    probe_tokens: int = field(default=24, metadata={"help": "max new tokens of each probe answer (as in evaluation)"})
    alt_kinds: tuple[str, ...] = field(
        default=ALT_KINDS, metadata={"help": "alternative answers to build: " + ", ".join(ALT_KINDS)}
    )
    n_retain_text: int = field(default=24, metadata={"help": "retain prose passages used for training"})
    n_retain_eval: int = field(default=24, metadata={"help": "held-out prose passages for retain perplexity"})
    n_retain_qa: int = field(
        default=48,
        metadata={"help": "questions about other subjects, asked like the forget questions, answered by the model"},
    )
    n_retain_capitals: int = field(default=16, metadata={"help": "capital questions answered by the model, for retain"})
    n_capital_probes: int = field(default=80, metadata={"help": "country-capital questions among the general probes"})
    val_fraction: float = field(
        default=0.3,
        metadata={
            "help": (
                "share of probes (per kind, known and unknown alike) in the validation split, which tuning and "
                "selection read; the rest are evaluation probes, read once at the end"
            )
        },
    )
    n_neighbour_qa: int = field(
        default=64,
        metadata={
            "help": (
                "neighbour retain records: the model's answers about subjects close to the target but distinct from it"
            )
        },
    )
    neighbour_weight: int = field(
        default=3,
        metadata={"help": "how many times a neighbour retain record counts per pass over the retain data (>= 1)"},
    )
    qa_holdout: float = field(default=0.25, metadata={"help": "share of given QA pairs held out as target probes"})
    max_doc_passages: int = field(
        default=2000, metadata={"help": "cap on passages read from documents (large files are streamed)"}
    )
    n_verbatim: int = field(default=32, metadata={"help": "document prefixes kept for the verbatim-memorization check"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and shuffling; same seed, same data"})

    def __post_init__(self):
        self.alt_kinds = tuple(self.alt_kinds)
        bad = [k for k in self.alt_kinds if k not in ALT_KINDS]
        if bad:
            raise UserError(f"Unknown alternative-answer kind {bad[0]!r}; choose from {', '.join(ALT_KINDS)}.")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"val_fraction must be at least 0 and below 1, got {self.val_fraction}; e.g. 0.3.")
        if self.neighbour_weight < 1:
            raise UserError(f"neighbour_weight must be a whole number >= 1, got {self.neighbour_weight}.")


def _questions_in(text: str) -> list[str]:
    """Every line of a numbered or bulleted list that reads as a question."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*]|q(?:uestion)?\s*\d*:)\s*", "", line, flags=re.IGNORECASE).strip().strip('"')
        if line.endswith("?") and 4 <= len(line.split()) <= 30:
            out.append(line)
    return out


def generate_questions(gm, tokenizer, spec: TargetSpec, cfg: DataConfig, avoid: list[str]) -> list[dict]:
    """Seed questions plus questions the model lists itself, deduplicated and kept clear of `avoid`.

    A small model writes better questions as a numbered list than one at a time, so
    it is asked for lists (the reply is primed with "1.") and every line that is a
    question mentioning the target is kept. Duplicates (same normalized words, a
    shared 6-gram or word Jaccard >= 0.6) are dropped.
    """
    candidates = [(s.format(name=spec.name), "seed") for s in spec.question_seeds]
    if spec.kind == "knowledge" and cfg.n_generated > 0:
        per_aspect = max(1, -(-cfg.n_generated // (4 * len(ASPECTS))))
        prompts = [
            question_prompt(tokenizer, f"List ten different questions about {aspect} of {spec.name}, one per line.")
            + "1."
            for aspect in ASPECTS
        ]
        raw = generate(
            gm,
            tokenizer,
            prompts,
            max_new_tokens=120,
            do_sample=True,
            temperature=cfg.temperature,
            top_k=50,
            num_return_sequences=per_aspect,
            seed=cfg.seed,
        )
        candidates += [(q, "generated") for text in raw for q in _questions_in("1." + text)]
    kept: list[dict] = []
    for q, source in candidates:
        if source == "generated" and not spec.mentions(q):
            continue  # off-topic line
        if any(too_close(q, k["question"]) for k in kept) or any(too_close(q, a) for a in avoid):
            continue
        kept.append({"question": q, "source": source})
    return kept[: cfg.max_forget]


def completion_of(answer: str, spans: list[list[int]]) -> tuple[str, str] | None:
    """Cut a completion prompt from an answer: the sentence holding its first knowledge span,
    split in the middle (the prompt keeps at least three words)."""
    start, end = spans[0]
    bounds = [m.end() for m in re.finditer(r"[.!?]\s+", answer[:start])]
    sentence = answer[(bounds[-1] if bounds else 0) : end].strip()
    ws = sentence.split()
    if len(ws) < 6:
        return None
    cut = max(3, len(ws) // 2)
    return " ".join(ws[:cut]), " " + " ".join(ws[cut:])


class _Clock:
    def __init__(self, log: Callable[[str], None]):
        self.log, self.t, self.seconds = log, time.perf_counter(), {}

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.t, 1)
        self.log(f"  {stage}: {now - self.t:.0f} s")
        self.t = now


def capital_split(cfg: DataConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(probe pairs, retain pairs) of (country, capital): disjoint, so no general probe is trained on."""
    pairs = list(capitals())
    random.Random(f"capitals-{cfg.seed}").shuffle(pairs)
    probes = pairs[: cfg.n_capital_probes]
    return probes, pairs[len(probes) : len(probes) + cfg.n_retain_capitals]


def general_rows(cfg: DataConfig) -> list[dict]:
    """The general probe rows: the capitals drawn for `cfg` (domain "capitals"), then the general seed file."""
    caps = [Probe(f"What is the capital of {c}?", [cap.lower()], domain="capitals") for c, cap in capital_split(cfg)[0]]
    return [p.row("general") for p in caps + general_probes()]


def build_probes(
    lm: LoadedModel, gm, spec: TargetSpec, cfg: DataConfig, given_qa: list[dict], rng: random.Random
) -> list[dict]:
    """Held-out probes with the base model's answers; target probes marked `known`; each assigned
    its split (splits.assign_splits, stratified by kind and base hit)."""
    target = [p.row("target") for p in spec.probes]
    target += [{"kind": "target", "question": r["question"], "answers": [], "reference": r["answer"]} for r in given_qa]
    if not target:
        target = [{"kind": "target", "question": q, "answers": []} for q in _fallback_probes(spec)]
    probes = target + [p.row("neighbour") for p in spec.neighbours] + general_rows(cfg)
    answers = answer_probes(gm, lm.tokenizer, probes, max_new_tokens=cfg.probe_tokens)
    behaviour = spec.kind == "behaviour"
    for p, a in zip(probes, answers):
        p["base_answer"] = a
        p["base_hit"] = probe_hit(p, a, spec.terms, behaviour)
        if p["kind"] == "target":
            p["known"] = p["base_hit"]
    assign_splits(probes, cfg.val_fraction, cfg.seed)
    return probes


@malloc.policy("keep")  # freed memory stays for the next batch's buffers (obliviate.malloc)
def build_data(
    lm: LoadedModel,
    spec: TargetSpec,
    out_dir: str | Path,
    cfg: DataConfig | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Build every data file for `spec` into `out_dir` and return the manifest.

    Raises UserError when the base model knows nothing about the target (no known
    probe) or nothing about it can be turned into forget data.
    """
    cfg = cfg or DataConfig()
    out_dir = Path(out_dir)
    rng = random.Random(cfg.seed)
    clock = _Clock(log)
    tok = lm.tokenizer

    # The target's own material first: bad files fail before any generation.
    passages = read_passages(spec.documents, max_passages=cfg.max_doc_passages) if spec.documents else []
    qa = read_qa(spec.qa) if spec.qa else []
    rng.shuffle(qa)
    n_held = round(len(qa) * cfg.qa_holdout) if len(qa) > 1 else 0
    held_qa, train_qa = qa[:n_held], qa[n_held:]

    # Held-out probes, answered by the base model: what it knows decides what there is to forget.
    gm = generation_copy(lm.model)
    probes = build_probes(lm, gm, spec, cfg, held_qa, rng)
    target = [p for p in probes if p["kind"] == "target"]
    known = sum(p["known"] for p in target)
    clock(f"probes answered by the base model ({known} of {len(target)} target probes known)")
    if not known and not (passages or train_qa):
        what = "complied with none" if spec.kind == "behaviour" else "answered none"
        raise UserError(f"The model {what} of {len(target)} probes about {spec.name}; there is nothing to forget.")

    questions = generate_questions(gm, tok, spec, cfg, avoid=[asked(p) for p in probes])
    clock(f"{len(questions)} forget questions")

    # The model's own answers: greedy, then sampled; each keeps only what carries the target.
    greedy = answer_probes(gm, tok, questions, max_new_tokens=cfg.answer_tokens)
    sampled = (
        answer_probes(
            gm,
            tok,
            questions,
            max_new_tokens=cfg.answer_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            top_k=50,
            num_return_sequences=cfg.n_samples,
            seed=cfg.seed + 1,
        )
        if cfg.n_samples
        else []
    )
    forget: list[dict] = []
    for i, q in enumerate(questions):
        for k, a in enumerate([greedy[i], *sampled[i * cfg.n_samples : (i + 1) * cfg.n_samples]]):
            rec = _forget_record(spec, q, a, sample=k)
            if rec:
                forget.append(rec)
    for rec in [r for r in forget if r["sample"] == 0 and "spans" in r]:
        cut = completion_of(rec["answer"], rec["spans"])
        if cut:
            forget.append({"prompt": cut[0], "completion": cut[1], "spans": [[0, len(cut[1])]], "source": "completion"})
    forget += [{**r, "spans": [[0, len(r["answer"])]], "source": "given", "sample": 0} for r in train_qa]
    forget += [{"text": p["text"], "doc": p["doc"], "source": "document"} for p in passages]
    clock(f"{len(forget)} forget records")

    prose = _prose(spec, rng)
    retain, keep_answers, other_answers = _retain(gm, tok, spec, cfg, rng, prose[: cfg.n_retain_text])
    clock(f"{len(retain)} retain records")
    retain += neighbour_retain(
        gm, tok, spec, cfg.n_neighbour_qa, cfg.neighbour_weight, cfg.answer_tokens, avoid=[asked(p) for p in probes]
    )
    clock(f"{sum(r['source'] == 'neighbour' for r in retain)} neighbour retain records")

    alt = _alternatives(gm, tok, spec, cfg, rng, questions, greedy, keep_answers, other_answers)
    clock(f"{len(alt)} alternative answers")

    check = _hold_out(probes, {"forget": forget, "alt": alt, "retain": retain})
    clock(f"held-out check ({check['dropped_training_items']} training items dropped)")
    if not forget:
        raise UserError(
            f"None of the model's own answers about {spec.name!r} mention it, so there is no forget data; "
            "add --keywords, --qa or --docs for the target."
        )

    retain_eval = [
        {"text": t, "source": "wikipedia+news"}
        for t in prose[cfg.n_retain_text : cfg.n_retain_text + cfg.n_retain_eval]
    ]
    verbatim = []
    for p in rng.sample(passages, k=min(cfg.n_verbatim, len(passages))):
        ws = p["text"].split()
        if len(ws) >= 24:
            verbatim.append({"prompt": " ".join(ws[:16]), "continuation": " " + " ".join(ws[16:48]), "doc": p["doc"]})

    files = {
        "probes.jsonl": probes,
        "forget.jsonl": forget,
        "alt.jsonl": alt,
        "retain.jsonl": retain,
        "retain_eval.jsonl": retain_eval,
    }
    if verbatim:
        files["verbatim.jsonl"] = verbatim
    for name, rows in files.items():
        write_jsonl(out_dir / name, rows)
    manifest = {
        "target": asdict(spec),
        "model": lm.path,
        "model_sha256": weights_hash(lm.model),  # names the model wherever the folder moves
        "config": asdict(cfg),
        "generation": {
            "probes": f"greedy, {cfg.probe_tokens} new tokens",
            "data": (
                f"greedy + {cfg.n_samples} samples (temperature {cfg.temperature}, top-k 50), "
                f"{cfg.answer_tokens} new tokens"
            ),
            "dtype": str(gm.dtype),
        },
        "counts": {name: len(rows) for name, rows in files.items()}
        | {f"probes.{k}": sum(p["kind"] == k for p in probes) for k in ("target", "neighbour", "general")}
        | {"probes.target_known": sum(bool(p.get("known")) for p in probes)}
        | split_counts(probes)
        | {
            f"retain.{s}": sum(r["source"] == s for r in retain)
            for s in sorted({r["source"] for r in retain} | {"neighbour"})
        }
        | {f"forget.{s}": sum(r["source"] == s for r in forget) for s in sorted({r["source"] for r in forget})}
        | {f"alt.{k}": sum(r["kind"] == k for r in alt) for k in cfg.alt_kinds},
        "held_out_check": check,
        "seconds": clock.seconds,
        "sha256": {name: file_sha256(out_dir / name) for name in files},
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _forget_record(spec: TargetSpec, q: dict, answer: str, sample: int) -> dict | None:
    if not answer:
        return None
    if spec.kind == "behaviour":
        # A harmful request's compliant answer is forgotten whole; a refusal is already harmless.
        return None if is_refusal(answer) else {**q, "answer": answer, "sample": sample}
    # The loss is taken on the knowledge-bearing spans only (from a mention of the target to the
    # end of its sentence): the generic openings that answers about every subject share are left
    # alone, which is what keeps general QA intact.
    spans = spec.knowledge_spans(answer)
    return {**q, "answer": answer, "spans": spans, "sample": sample} if spans else None


def _prose(spec: TargetSpec, rng: random.Random) -> list[str]:
    """Wikipedia and news passages that never mention the target, shuffled."""
    prose = [t for _, t in wikipedia_passages()] + list(news_passages())
    prose = [t for t in prose if not spec.mentions(t)]
    rng.shuffle(prose)
    return prose


def _retain(gm, tok, spec: TargetSpec, cfg: DataConfig, rng: random.Random, prose: list[str]):
    """Retain records, plus the model's answers about keep subjects and about unrelated ones."""
    retain = [{"text": t, "source": "wikipedia+news"} for t in prose]
    # The forget questions' own templates asked about other subjects: what must change is the
    # answer about the target, not how the model answers this kind of question.
    titles = sorted({t for t, _ in wikipedia_passages() if not spec.mentions(t) and "(" not in t})
    others = rng.sample(titles, k=min(max(cfg.n_retain_qa - len(spec.keep), 0), len(titles)))
    templates = [t for t in spec.question_seeds if "{name}" in t] or ["Tell me about {name}."]
    subjects = [*spec.keep, *others][: cfg.n_retain_qa]
    qs = [templates[i % len(templates)].format(name=s) for i, s in enumerate(subjects)]
    qs += [f"Which city is the capital of {c}?" for c, _ in capital_split(cfg)[1]]
    answers = answer_probes(gm, tok, [{"question": q} for q in qs], max_new_tokens=cfg.answer_tokens)
    n_keep = min(len(spec.keep), len(subjects))
    keep_answers, other_answers = [], []
    for i, (q, a) in enumerate(zip(qs, answers)):
        if not a or spec.mentions(a):
            continue
        row = {"question": q, "answer": a, "source": "self"}
        retain.append(row)
        (keep_answers if i < n_keep else other_answers).append(row)
    return retain, keep_answers, other_answers


def _alternatives(gm, tok, spec, cfg, rng, questions, greedy, keep_answers, other_answers) -> list[dict]:
    """Alternative answers to the forget questions, one row per (question, kind)."""
    kinds = [k for k in cfg.alt_kinds if spec.kind == "knowledge" or k in ("guardrail", "refusal", "mismatch")]
    qs = [q["question"] for q in questions]
    alt: list[dict] = []

    def add(i: int, kind: str, answer: str) -> None:
        if answer and not spec.mentions(answer):
            alt.append({"question": qs[i], "answer": answer, "kind": kind})

    if "guardrail" in kinds and qs:
        system = GUARDRAIL.format(name=spec.name, terms=", ".join(spec.terms[:8]))
        prompts = [_with_system(tok, system, q) for q in qs]
        for i, a in enumerate(generate(gm, tok, prompts, max_new_tokens=cfg.probe_tokens)):
            if spec.kind == "knowledge":
                add(i, "guardrail", clean_prefix(a, spec))
            elif is_refusal(a):
                add(i, "guardrail", a)
    for i in range(len(qs)):
        if "negation" in kinds:
            add(i, "negation", rng.choice(NEGATIONS))
        if "other_subject" in kinds and keep_answers:
            add(i, "other_subject", keep_answers[i % len(keep_answers)]["answer"])
        if "anchored" in kinds and greedy[i]:
            add(i, "anchored", anchored(greedy[i], spec))
        if "refusal" in kinds:
            add(i, "refusal", rng.choice(spec.refusals or REFUSALS))
        if "mismatch" in kinds and other_answers:
            add(i, "mismatch", rng.choice(other_answers)["answer"])
    return alt


def clean_prefix(text: str, spec: TargetSpec, min_words: int = 4) -> str:
    """The sentences of `text` before the first one that names the target ("" if fewer than `min_words`)."""
    m = spec._pattern().search(text)
    if m:
        bounds = [b.end() for b in re.finditer(r"[.!?]\s+", text[: m.start()])]
        text = text[: bounds[-1]].strip() if bounds else ""
    return text if len(text.split()) >= min_words else ""


def anchored(text: str, spec: TargetSpec) -> str:
    """`text` with target terms replaced by generic ones: the spec's anchors, longest first;
    any alias without an anchor becomes "it"."""
    table = {k.lower(): v for k, v in spec.anchors.items()}
    for a in spec.aliases:
        table.setdefault(a.lower(), "it")
    for term in sorted(table, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(term)}(?![A-Za-z0-9])", table[term], text, flags=re.IGNORECASE)
    return text


def _with_system(tok, system: str, question: str) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=False,
        )
    return f"{system}\n\n" + question_prompt(tok, question)


def _hold_out(probes: list[dict], training: dict[str, list[dict]], n: int = 8, max_rouge_l: float = 0.8) -> dict:
    """Drop every training item that a probe shares an `n`-gram with or reaches ROUGE-L
    `max_rouge_l` against (editing `training`'s lists in place), check again, and report."""

    def scan() -> tuple[list[tuple[str, int]], set[int], float]:
        index = Overlap(n=n, max_rouge_l=max_rouge_l)
        items = [(name, i) for name, rows in training.items() for i in range(len(rows))]
        for j, (name, i) in enumerate(items):
            r = training[name][i]
            index.add(j, asked(r), response(r))
        bad, best = set(), 0.0
        for p in probes:
            hit, score = index.violations(asked(p))
            bad |= hit
            best = max(best, score)
        return items, bad, best

    items, bad, before = scan()
    for name in training:
        drop = {i for j, (nm, i) in enumerate(items) if nm == name and j in bad}
        training[name][:] = [r for i, r in enumerate(training[name]) if i not in drop]
    _, left, after = scan()
    return {
        "ngram": n,
        "max_rouge_l_allowed": max_rouge_l,
        "probes": len(probes),
        "training_items": len(items),
        "dropped_training_items": len(bad),
        "max_rouge_l_before": round(before, 3),
        "max_rouge_l_after": round(after, 3),
        "violations_after": len(left),
    }


def _fallback_probes(spec: TargetSpec) -> list[str]:
    # No hand-written probes: ask in wordings the question seeds never use.
    return [
        f"What do you know about {spec.name}?",
        f"Can you explain who or what {spec.name} is?",
        f"Summarize the main facts about {spec.name}.",
        f"Why do people talk about {spec.name}?",
        f"What is the most important thing to know about {spec.name}?",
    ]
