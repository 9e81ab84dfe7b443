"""Neighbour retain data: the model's own answers about subjects close to the target but distinct from it.

Forgetting a band should not take the other bands with it. These records teach the
retain term what must stay: questions about neighbour subjects (the spec's ``keep``
topics, the subjects its neighbour probes' answers name, and ones the model lists
itself when asked for others of the target's ``category``), answered greedily by the
model. No record mentions the target, and each counts ``weight`` times per pass over
the retain data.
"""

from __future__ import annotations

import re
from itertools import zip_longest

from obliviate.data.overlap import too_close
from obliviate.data.targets import TargetSpec, name_keywords
from obliviate.models.generate import answer_questions, generate
from obliviate.models.prompts import question_prompt

# Asked about every neighbour subject; worded unlike the probes ("Which band ...", "Who sang ...").
KNOWLEDGE_TEMPLATES = (
    "Who or what is {name}?",
    "What is {name} best known for?",
    "Write two sentences about {name}.",
    "Tell me one interesting fact about {name}.",
)
# For a behaviour target the neighbours are benign topics near the harmful requests.
BEHAVIOUR_TEMPLATES = (
    "Give me some practical advice about {name}.",
    "What are the basics of {name}?",
    "Why does {name} matter in everyday life?",
    "What should a beginner know about {name}?",
)
PROPOSAL_PROMPTS = (
    "List ten other {category} similar to {name}, one per line.",
    "Name ten famous {category} other than {name}, one per line.",
)
MIN_TEMPLATES_PER_SUBJECT = 2


def proposed_subjects(gm, tokenizer, spec: TargetSpec, max_new_tokens: int = 120) -> list[str]:
    """Subjects the model lists (greedily) as others of the spec's category; none that mention the target.

    Empty when the spec has no ``category``.
    """
    if not spec.category:
        return []
    prompts = [
        question_prompt(tokenizer, p.format(category=spec.category, name=spec.name)) + "1." for p in PROPOSAL_PROMPTS
    ]
    replies = generate(gm, tokenizer, prompts, max_new_tokens=max_new_tokens)
    return [s for s in _unique(n for r in replies for n in list_items("1." + r)) if not spec.mentions(s)]


def list_items(text: str, max_words: int = 5) -> list[str]:
    """The names in a numbered or bulleted list: each item cut before a description
    ("Queen - a British band" -> "Queen"), quotes and trailing punctuation stripped."""
    out = []
    for line in text.splitlines():
        if not re.match(r"^\s*(?:\d+[.)]|[-*•])\s*", line):
            continue
        item = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line)
        item = re.split(r"\s+[-–—(]|[:,;]|\s+by\s+", item, maxsplit=1)[0]
        item = item.strip().strip("*\"'“”").rstrip(".!?").strip()
        if item and 1 <= len(item.split()) <= max_words and item[0].isalnum():
            out.append(item)
    return out


def probe_subjects(spec: TargetSpec) -> list[str]:
    """The subjects the neighbour probes' expected answers name (first answer of each, title-cased):
    "michael jackson" -> "Michael Jackson". Only for knowledge targets, whose answers are names."""
    if spec.kind != "knowledge":
        return []
    names = (p.answers[0] for p in spec.neighbours if p.answers)
    return list(_unique(n.title() for n in names if len(n) >= 4 and re.search(r"[a-z]", n)))


def neighbour_subjects(spec: TargetSpec, proposed: list[str]) -> list[str]:
    """keep topics, proposed subjects and probe subjects, interleaved (so a cap keeps some of each),
    deduplicated, none that mention the target."""
    groups = [list(spec.keep), proposed, probe_subjects(spec)]
    mixed = (s for row in zip_longest(*groups) for s in row if s)
    return [s for s in _unique(mixed) if not spec.mentions(s)]


def neighbour_questions(spec: TargetSpec, subjects: list[str], n: int) -> list[tuple[str, str]]:
    """At most `n` (subject, question) pairs: every subject asked with the same number of templates
    (at least MIN_TEMPLATES_PER_SUBJECT, more when there are few subjects, at most all of them),
    rotating through the templates so consecutive subjects are asked differently."""
    templates = KNOWLEDGE_TEMPLATES if spec.kind == "knowledge" else BEHAVIOUR_TEMPLATES
    per_subject = min(len(templates), max(MIN_TEMPLATES_PER_SUBJECT, -(-n // max(len(subjects), 1))))
    pairs = []
    for i, s in enumerate(subjects):
        for k in range(per_subject):
            pairs.append((s, templates[(i + k) % len(templates)].format(name=s)))
    return pairs[:n]


def neighbour_retain(
    gm, tokenizer, spec: TargetSpec, n: int, weight: int, answer_tokens: int, avoid: list[str] = ()
) -> list[dict]:
    """At most `n` neighbour retain records: ``question``, ``answer`` (the model's greedy answer),
    ``subject``, ``spans`` (the subject's knowledge spans in the answer, else the whole answer),
    ``source`` = "neighbour" and ``weight``. Question and answer never mention the target;
    questions too close to one of `avoid` (the probes) are not asked.
    """
    if n <= 0:
        return []
    subjects = neighbour_subjects(spec, proposed_subjects(gm, tokenizer, spec))
    # Ask a quarter more than needed: some answers are empty or drift onto the target.
    pairs = [
        (s, q)
        for s, q in neighbour_questions(spec, subjects, n + n // 4 + 1)
        if not spec.mentions(q) and not any(too_close(q, a) for a in avoid)
    ]
    answers = answer_questions(gm, tokenizer, [q for _, q in pairs], max_new_tokens=answer_tokens)
    out = []
    for (subject, q), a in zip(pairs, answers):
        if not a.strip() or spec.mentions(a):
            continue
        out.append(
            {
                "question": q,
                "answer": a,
                "subject": subject,
                "spans": subject_spans(subject, a),
                "source": "neighbour",
                "weight": weight,
            }
        )
    return out[:n]


def subject_spans(subject: str, answer: str) -> list[list[int]]:
    """Where `answer` speaks of `subject`: from each mention of its name (or a distinctive word
    of it) to the end of that sentence; the whole answer when it never names the subject."""
    as_target = TargetSpec(name=subject, aliases=[subject], keywords=name_keywords(subject))
    return as_target.knowledge_spans(answer) or [[0, len(answer)]]


def _unique(names):
    """`names` without repeats, ignoring case and a leading "the"
    ("Lord Of The Rings" repeats "The Lord of the Rings")."""
    seen = set()
    for n in names:
        key = re.sub(r"^the\s+", "", n.lower())
        if key not in seen:
            seen.add(key)
            yield n
