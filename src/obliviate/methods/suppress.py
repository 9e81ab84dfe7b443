"""Suppression: ban target terms at generation and move their token embeddings toward generic ones."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from obliviate.methods.base import EditMethod, register_method
from obliviate.models.hooks import Hooks, attach


@dataclass
class SuppressConfig:
    ban: bool = field(
        default=True,
        metadata={"help": "forbid generating every spelling of every target term (transformers' bad_words_ids)"},
    )
    embed_mix: float = field(
        default=0.0,
        metadata={
            "help": (
                "share of each rare target-term token's input embedding replaced by a generic one (the anchored "
                "term's tokens where the target has anchors, else the mean embedding); 0 (the default) disables "
                "embedding edits: they also hit shared tokens such as ' Brian' or ' Yellow' and raise retain "
                "perplexity (docs/METHODS.md)"
            )
        },
    )
    max_common: int = field(
        default=5,
        metadata={
            "help": (
                "a token counts as rare, and may be edited, when it has 3+ letters and occurs in at most this many of "
                "the ~6,000 Wikipedia and news passages shipped with gensim; common pieces such as ' Beat', ' George' "
                "or 'les' are left alone"
            )
        },
    )


def spellings(term: str) -> list[str]:
    """The ways a term shows up in text: as written, lower case, capitalized, with or without a leading space."""
    forms = {term, term.lower(), term.title(), term[:1].upper() + term[1:]}
    return sorted({f for form in forms for f in (form, " " + form)})


def term_token_ids(tokenizer, term: str) -> list[list[int]]:
    return [ids for s in spellings(term) if (ids := tokenizer(s, add_special_tokens=False)["input_ids"])]


def passage_counts(tokenizer) -> Counter:
    """How many of the shipped Wikipedia and news passages contain each token id."""
    from obliviate.data.corpus import news_passages, wikipedia_passages

    texts = [p for _, p in wikipedia_passages()] + list(news_passages())
    counts = Counter()
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        counts.update(set(ids))
    return counts


@register_method
class Suppress(EditMethod):
    name = "suppress"
    help = (
        "Token-level suppression: generation may not complete any spelling of a target term; optionally "
        "(embed_mix > 0) the input embeddings of rare target-term tokens move toward generic (anchored) ones."
    )
    source = (
        "the Beatles notebook seed's suggested next steps (token suppression, embedding edits); transformers' "
        "bad_words_ids"
    )
    config_class = SuppressConfig

    def edit(self, model, tokenizer, data, target) -> Hooks:
        cfg = self.config
        terms = list(dict.fromkeys([*target.terms, *target.anchors]))
        bad = sorted({tuple(ids) for t in terms for ids in term_token_ids(tokenizer, t)}) if cfg.ban else []
        edited = self._edit_embeddings(model, tokenizer, target, target.terms) if cfg.embed_mix else []
        hooks = Hooks(
            method=self.name,
            bad_words=[list(b) for b in bad],
            notes={"banned_sequences": len(bad), "edited_tokens": [tokenizer.decode([t]) for t in edited]},
        )
        attach(model, hooks)
        return hooks

    @torch.no_grad()
    def _edit_embeddings(self, model, tokenizer, target, terms) -> list[int]:
        counts = passage_counts(tokenizer)
        emb = model.get_input_embeddings().weight
        mean = emb.mean(0)
        edited: dict[int, torch.Tensor] = {}
        for term in terms:
            anchor = target.anchors.get(term)
            for ids in term_token_ids(tokenizer, term):
                if anchor:
                    generic_ids = tokenizer(" " + anchor, add_special_tokens=False)["input_ids"]
                    generic = emb[generic_ids].mean(0)
                else:
                    generic = mean
                for t in ids:
                    rare = (
                        counts[t] <= self.config.max_common and sum(ch.isalpha() for ch in tokenizer.decode([t])) >= 3
                    )
                    if rare and t not in edited:
                        edited[t] = generic
        for t, generic in edited.items():
            emb[t] = (1 - self.config.embed_mix) * emb[t] + self.config.embed_mix * generic
        return sorted(edited)
