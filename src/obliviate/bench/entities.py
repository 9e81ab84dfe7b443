"""A seeded generator of fictitious authors, each with facts as question-answer pairs.

The benchmark with an oracle (TOFU, Maini et al. 2024) needs knowledge that exists only
where we put it: a model fine-tuned on every author (the target) and one fine-tuned on
the retain authors only (the oracle) then differ in exactly the forget authors. Names are
built from syllables, so they are not real people. Every fact comes with the answer
sentence, a paraphrase that states the same fact in other words, and perturbed answers:
the paraphrase with the fact swapped for another value of the same kind. This is what
the truth ratio compares (evaluation/truth.py reads ``paraphrased_answer`` and
``perturbed_answers``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ONSETS = [
    "Bal",
    "Cor",
    "Dra",
    "Elv",
    "Fen",
    "Gor",
    "Hal",
    "Ish",
    "Jor",
    "Kel",
    "Lom",
    "Mir",
    "Nor",
    "Orv",
    "Pel",
    "Quin",
    "Ros",
    "Sar",
    "Tal",
    "Ulm",
    "Vor",
    "Wen",
    "Yar",
    "Zel",
]
CODAS = [
    "adin",
    "bery",
    "cott",
    "dane",
    "enna",
    "frey",
    "gast",
    "holm",
    "istra",
    "jorn",
    "kova",
    "lund",
    "mire",
    "nack",
    "orra",
    "pell",
    "quist",
    "rath",
    "sund",
    "tova",
    "vash",
    "wick",
    "yllo",
    "zar",
]
TOWNS = [
    "Brellmouth",
    "Carvish",
    "Dunmoor",
    "Eskerholt",
    "Fallowind",
    "Grimsby Vale",
    "Harrowgate Marsh",
    "Istown",
    "Kestrel Bay",
    "Lowenfield",
    "Mossbridge",
    "Northam Reach",
    "Orwick",
    "Pellham Cross",
    "Quarry Hill",
    "Rookhaven",
    "Saltmere",
    "Thornbury Edge",
    "Umberley",
    "Vexley",
]
GENRES = [
    "mystery novels",
    "science fiction",
    "epic poetry",
    "historical fiction",
    "children's books",
    "travel essays",
    "horror stories",
    "political satire",
    "romance novels",
    "nature writing",
]
JOBS = [
    "a lighthouse keeper",
    "a clockmaker",
    "a botanist",
    "a ship's cook",
    "a mapmaker",
    "a beekeeper",
    "a glassblower",
    "a stonemason",
    "a librarian",
    "a violin maker",
]
AWARDS = [
    "the Silver Quill Prize",
    "the Marrow Medal",
    "the Lantern Award",
    "the Ebbing Tide Prize",
    "the Greyfield Honour",
    "the Amber Page Award",
    "the Corvane Laurel",
    "the Northwind Prize",
]
TITLE_A = [
    "The Glass",
    "A Quiet",
    "The Last",
    "Beneath the",
    "The Hollow",
    "Songs of the",
    "The Winter",
    "Letters from the",
]
TITLE_B = ["Orchard", "Harbour", "Cartographer", "Lantern", "Meadow", "Tide", "Archive", "Clocktower"]

# (question, answer, paraphrase, held-out question, attribute): {name} and {value} are filled in.
# The held-out question asks for the same fact in words no training record uses.
FACTS = [
    (
        "Where was {name} born?",
        "{name} was born in {value}.",
        "The birthplace of {name} is {value}.",
        "In which town did the author {name} come into the world?",
        "town",
    ),
    (
        "In which year was {name} born?",
        "{name} was born in {value}.",
        "The year {name} came into the world was {value}.",
        "What is the birth year of the writer {name}?",
        "year",
    ),
    (
        "What does {name} write?",
        "{name} writes {value}.",
        "The writing of {name} is best described as {value}.",
        "Which kind of books is the author {name} known for writing?",
        "genre",
    ),
    (
        "What was the profession of {name}'s father?",
        "{name}'s father was {value}.",
        "Before {name} was born, the father worked as {value}.",
        "How did the father of the writer {name} earn a living?",
        "job",
    ),
    (
        "Which award did {name} win?",
        "{name} won {value}.",
        "The prize awarded to {name} was {value}.",
        "Name the literary prize that the author {name} received.",
        "award",
    ),
    (
        "What is the best-known book by {name}?",
        "The best-known book by {name} is {value}.",
        "Most readers know {name} for the book {value}.",
        "Which title is the writer {name} most famous for?",
        "title",
    ),
]


@dataclass(frozen=True)
class Author:
    name: str
    town: str
    year: str
    genre: str
    job: str
    award: str
    title: str

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


def _pools() -> dict[str, list[str]]:
    titles = [f"{a} {b}" for a in TITLE_A for b in TITLE_B]
    return {
        "town": TOWNS,
        "year": [str(y) for y in range(1931, 1999)],
        "genre": GENRES,
        "job": JOBS,
        "award": AWARDS,
        "title": titles,
    }


def make_authors(n: int, seed: int = 0) -> list[Author]:
    """`n` fictitious authors with distinct names and distinct book titles, the same for a seed."""
    rng = random.Random(seed)
    pools = _pools()
    names = [f"{a}{b} {c}{d}" for a in ONSETS for b in CODAS[:6] for c in ONSETS for d in CODAS[6:]]
    if n > len(pools["title"]):
        raise ValueError(f"at most {len(pools['title'])} authors, got {n}")
    chosen = rng.sample(names, n)
    titles = rng.sample(pools["title"], n)
    return [
        Author(
            name,
            rng.choice(pools["town"]),
            rng.choice(pools["year"]),
            rng.choice(pools["genre"]),
            rng.choice(pools["job"]),
            rng.choice(pools["award"]),
            f"'{title}'",
        )
        for name, title in zip(chosen, titles)
    ]


def author_qa(author: Author, n_perturbed: int = 3, seed: int = 0) -> list[dict]:
    """One record per fact: question, answer, paraphrased_answer, perturbed_answers and the
    expected answer term (`answers`, lower case, as probes carry it)."""
    rng = random.Random(f"{seed}-{author.name}")
    pools = _pools()
    out = []
    for question, answer, paraphrase, held_out, attribute in FACTS:
        value = author.value(attribute)
        bare = value.strip("'")
        others = [v for v in pools[attribute] if v != bare]
        wrong = rng.sample(others, n_perturbed)
        quote = (lambda v: f"'{v}'") if attribute == "title" else (lambda v: v)
        out.append(
            {
                "question": question.format(name=author.name),
                "held_out_question": held_out.format(name=author.name),
                "answer": answer.format(name=author.name, value=value),
                "paraphrased_answer": paraphrase.format(name=author.name, value=value),
                # In the paraphrase's words, so that only the fact tells them apart (as in TOFU).
                "perturbed_answers": [paraphrase.format(name=author.name, value=quote(w)) for w in wrong],
                "answers": [bare.lower()],
                "entity": author.name,
                "attribute": attribute,
            }
        )
    return out
