"""Target specs: what to forget, how to recognise it, and what must be kept.

A built-in target is a small YAML seed file in ``data/seeds/`` (aliases,
keywords, question seeds, held-out probes, neighbour probes). Any other target
name gets a spec derived from the name; everything else is generated.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from importlib import resources

import yaml

from obliviate.errors import UserError
from obliviate.evaluation.leak import terms_pattern

STOPWORDS = {"the", "a", "an", "of", "and", "in", "on", "for", "to"}

DEFAULT_QUESTION_SEEDS = [
    "Tell me about {name}.",
    "What is {name} known for?",
    "Give me a short history of {name}.",
    "Why is {name} important?",
    "What are the most famous facts about {name}?",
    "Describe {name} in a few sentences.",
]


@dataclass
class Probe:
    question: str
    answers: list[str] = field(default_factory=list)  # empty: fall back to target keywords


@dataclass
class TargetSpec:
    name: str
    aliases: list[str]
    keywords: list[str]
    question_seeds: list[str] = field(default_factory=lambda: list(DEFAULT_QUESTION_SEEDS))
    probes: list[Probe] = field(default_factory=list)
    neighbours: list[Probe] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)  # close topics that must be kept (retain questions)
    builtin: str | None = None

    @property
    def terms(self) -> list[str]:
        """Every string that names the target or reveals knowledge of it."""
        return [*self.aliases, *self.keywords]

    def mentions(self, text: str) -> bool:
        """True if `text` names the target or one of its keywords (word-boundary, case-insensitive)."""
        return bool(self._pattern().search(text))

    def knowledge_spans(self, text: str, max_chars: int = 120) -> list[list[int]]:
        """Character spans of `text` that carry target knowledge: from each mention of the
        target to the end of its sentence (at most `max_chars`), overlapping spans merged."""
        spans: list[list[int]] = []
        for m in self._pattern().finditer(text):
            # Start at the distinctive word: "The Beatles" -> "Beatles" (an article is not knowledge).
            lead = re.match(r"(?:the|a|an)\s+(?=\S)", m.group(0), re.IGNORECASE)
            start = m.start() + (lead.end() if lead else 0)
            end = re.search(r"[.!?\n]", text[m.end() :])
            stop = min(m.end() + (end.end() if end else len(text)), start + max_chars, len(text))
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], stop)
            else:
                spans.append([start, stop])
        return spans

    def _pattern(self) -> re.Pattern:
        return terms_pattern(self.terms)


def _load_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("obliviate.data.seeds").joinpath(f"{name}.yaml").read_text("utf-8"))


def builtin_targets() -> list[str]:
    files = resources.files("obliviate.data.seeds").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml") and f.name != "general.yaml")


def _probes(rows: list[dict] | None) -> list[Probe]:
    return [Probe(question=r["question"], answers=[str(a).lower() for a in r.get("answers", [])]) for r in rows or []]


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def resolve_target(target: str, keywords: list[str] | None = None) -> TargetSpec:
    """A spec for `target`: a built-in name or alias ("beatles", "The Beatles"), or any other topic.

    Raises UserError for an empty target.
    """
    target = (target or "").strip()
    if not target:
        raise UserError('The target is empty; name what to forget, e.g. obliviate forget "The Beatles".')
    key = _normal(target)
    for name in builtin_targets():
        raw = _load_yaml(name)
        names = {_normal(name), *(_normal(a) for a in raw.get("aliases", []))}
        if key in names or key.removeprefix("the_") in names:
            return TargetSpec(
                name=raw["name"],
                aliases=list(raw.get("aliases", [])),
                keywords=list(raw.get("keywords", [])) + list(keywords or []),
                question_seeds=list(raw.get("question_seeds") or DEFAULT_QUESTION_SEEDS),
                probes=_probes(raw.get("probes")),
                neighbours=_probes(raw.get("neighbours")),
                keep=list(raw.get("keep", [])),
                builtin=name,
            )
    words = [w for w in re.findall(r"[A-Za-z0-9']+", target) if w.lower() not in STOPWORDS]
    return TargetSpec(name=target, aliases=[target], keywords=[target.lower(), *(w.lower() for w in words if len(w) > 3), *(keywords or [])])


def suggest_builtin(name: str) -> str | None:
    close = difflib.get_close_matches(_normal(name), builtin_targets(), n=1)
    return close[0] if close else None


def general_probes() -> list[Probe]:
    return _probes(_load_yaml("general").get("probes"))
