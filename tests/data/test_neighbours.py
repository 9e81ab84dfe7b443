"""Neighbour retain data and the wider probe files: nothing in them ever mentions the target."""

import pytest

from obliviate.data import neighbours
from obliviate.data.neighbours import (
    list_items,
    neighbour_questions,
    neighbour_retain,
    neighbour_subjects,
    probe_subjects,
    subject_spans,
)
from obliviate.data.targets import builtin_targets, general_probes, resolve_target
from obliviate.models.generate import generation_copy


@pytest.mark.parametrize("name", builtin_targets())
def test_builtin_neighbour_probes_never_mention_the_target_and_all_have_answers(name):
    spec = resolve_target(name)
    assert len(spec.neighbours) >= 120
    for p in spec.neighbours:
        assert p.answers, p.text
        assert not spec.mentions(p.text + " " + " ".join(p.answers)), p.text


@pytest.mark.parametrize("name", builtin_targets())
def test_general_probes_never_mention_a_builtin_target(name):
    spec = resolve_target(name)
    assert not [p.text for p in general_probes() if spec.mentions(p.text + " " + " ".join(p.answers))]


def test_general_probes_span_several_domains_and_all_have_answers():
    probes = general_probes()
    assert len(probes) >= 300 and all(p.answers and p.domain for p in probes)
    domains = {p.domain for p in probes}
    assert {
        "geography",
        "science",
        "history",
        "arts",
        "literature",
        "sport",
        "technology",
        "food",
        "everyday",
    } <= domains
    assert len({p.text for p in probes}) == len(probes)


@pytest.mark.parametrize("name", builtin_targets())
def test_builtin_neighbour_subjects_and_questions_never_mention_the_target(name):
    spec = resolve_target(name)
    subjects = neighbour_subjects(spec, proposed=["Another Subject", spec.name, *spec.aliases])
    assert "Another Subject" in subjects and not any(spec.mentions(s) for s in subjects)
    assert set(spec.keep) <= set(subjects)
    pairs = neighbour_questions(spec, subjects, n=200)
    assert pairs and not any(spec.mentions(q) for _, q in pairs)


def test_probe_subjects_are_the_names_the_neighbour_probes_expect():
    subjects = probe_subjects(resolve_target("beatles"))
    assert {"Queen", "Michael Jackson", "Led Zeppelin"} <= set(subjects)
    assert probe_subjects(resolve_target("harmful")) == []  # a behaviour target's answers are not names


def test_every_subject_is_asked_with_several_templates():
    spec = resolve_target("beatles")
    pairs = neighbour_questions(spec, ["Queen", "ABBA", "Madonna"], n=6)
    assert [s for s, _ in pairs] == ["Queen", "Queen", "ABBA", "ABBA", "Madonna", "Madonna"]
    assert len({q for _, q in pairs}) == 6
    # Few subjects: each is asked with more templates, up to all of them.
    assert len(neighbour_questions(spec, ["Queen"], n=64)) == len(neighbours.KNOWLEDGE_TEMPLATES)


def test_list_items_reads_names_from_a_numbered_list():
    text = (
        "1. The Rolling Stones - an English band\n2. **Queen** (1970)\n3. Elvis Presley: the King\n"
        "Here are some more:\n4. Bob Dylan.\n5. a very long line that is certainly not just a name at all"
    )
    assert list_items(text) == ["The Rolling Stones", "Queen", "Elvis Presley", "Bob Dylan"]


def test_subject_spans_cover_the_sentence_naming_the_subject_else_the_whole_answer():
    answer = "They toured a lot. Queen was a British rock band. It sold records."
    start = answer.index("Queen")
    assert subject_spans("Queen", answer) == [[start, answer.index(" It sold")]]
    assert subject_spans("Queen", "A British rock band.") == [[0, 20]]


def test_answers_that_mention_the_target_are_dropped(monkeypatch):
    """The fake model names the Beatles in every other answer: those records are dropped."""
    spec = resolve_target("beatles")
    monkeypatch.setattr(neighbours, "generate", lambda *a, **k: ["1. Queen\n2. The Beatles\n3. ABBA"] * 2)
    monkeypatch.setattr(
        neighbours,
        "answer_questions",
        lambda gm, tok, qs, **k: [("Like the Beatles." if i % 2 else f"Answer {i}.") for i in range(len(qs))],
    )
    rows = neighbour_retain(None, None, spec, n=10, weight=3, answer_tokens=8)
    assert len(rows) == 7  # 13 asked (a quarter more than 10); the 7 even-numbered answers are kept
    assert all(not spec.mentions(r["question"] + " " + r["answer"]) for r in rows)
    assert all(r["source"] == "neighbour" and r["weight"] == 3 and r["spans"] for r in rows)


@pytest.mark.parametrize("name", builtin_targets())
def test_a_tiny_models_neighbour_records_never_mention_the_target(name, tiny_lm):
    spec = resolve_target(name)
    gm = generation_copy(tiny_lm.model)
    rows = neighbour_retain(gm, tiny_lm.tokenizer, spec, n=8, weight=2, answer_tokens=8)
    assert len(rows) <= 8
    for r in rows:
        assert not spec.mentions(r["question"]) and not spec.mentions(r["answer"])
        assert r["weight"] == 2 and r["source"] == "neighbour"
        assert all(0 <= s < e <= len(r["answer"]) for s, e in r["spans"])
