"""Real text that ships inside the installed `gensim` wheel: Wikipedia articles, news, capitals.

Read at run time from the installed package; none of it is copied into this repository.
"""

from __future__ import annotations

import bz2
import functools
import json
import re
from pathlib import Path

from obliviate.errors import UserError

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILE = "lee_background.cor"
ANALOGY_FILE = "questions-words.txt"


def _test_data(name: str) -> Path:
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise UserError("gensim is not installed; run `pip install gensim` (it ships the retain corpus).") from None
    path = Path(datapath(name))
    if not path.is_file():
        raise UserError(f"gensim's test data file {name} is missing; reinstall gensim.")
    return path


def _chunks(text: str, words_per_chunk: int) -> list[str]:
    """Split prose into passages of about `words_per_chunk` words, on sentence ends."""
    sentences = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text).strip())
    out, cur = [], []
    for s in sentences:
        cur.append(s)
        if sum(len(c.split()) for c in cur) >= words_per_chunk:
            out.append(" ".join(cur))
            cur = []
    return out


@functools.cache
def wikipedia_passages(words_per_chunk: int = 60) -> tuple[tuple[str, str], ...]:
    """(article title, passage) pairs of clean prose from the shipped Wikipedia dump.

    Parsing the wiki markup takes ~6 s, so the passages are cached under
    $OBLIVIATE_HOME, keyed by the dump's size and modification time.
    """
    from obliviate.io import write_json
    from obliviate.models.loading import obliviate_home

    src = _test_data(WIKI_FILE)
    stat = src.stat()
    cached = obliviate_home() / "corpus" / f"wikipedia-{stat.st_size}-{int(stat.st_mtime)}-{words_per_chunk}.json"
    if cached.is_file():
        try:
            return tuple(tuple(p) for p in json.loads(cached.read_text("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass  # a damaged cache is rebuilt
    out = _parse_wikipedia(src, words_per_chunk)
    write_json(cached, out)
    return tuple(out)


def _parse_wikipedia(src: Path, words_per_chunk: int) -> list[tuple[str, str]]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(src) as f:
        for title, text, _ in extract_pages(f):
            if not text or text.lower().startswith("#redirect"):
                continue
            prose = filter_wiki(text).replace("'''", "").replace("''", '"')
            # Keep prose paragraphs only: drop lists, tables and leftover markup.
            paras = [p for p in prose.split("\n") if len(p.split()) > 25 and not re.search(r"[|=*{}\[\]]", p)]
            out.extend((title, c) for c in _chunks(" ".join(paras), words_per_chunk))
    return out


@functools.cache
def news_passages(words_per_chunk: int = 60) -> tuple[str, ...]:
    with open(_test_data(NEWS_FILE), encoding="utf-8", errors="replace") as f:
        return tuple(c for line in f for c in _chunks(line, words_per_chunk))


@functools.cache
def capitals() -> tuple[tuple[str, str], ...]:
    """(country, capital) pairs from the capital sections of word2vec's analogy file."""
    pairs, section = set(), ""
    with open(_test_data(ANALOGY_FILE), encoding="utf-8") as f:
        for line in f:
            if line.startswith(":"):
                section = line[1:].strip()
            elif section.startswith("capital"):
                a, b, c, d = line.split()
                pairs.update({(b, a), (d, c)})
    return tuple(sorted(pairs))
