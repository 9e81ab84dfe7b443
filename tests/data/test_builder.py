"""The data builder on tiny models: every file, its invariants, selection, determinism and refusals."""

import json

import pytest

from obliviate.data.builder import ALT_KINDS, DataConfig, anchored, build_data, completion_of
from obliviate.data.overlap import Overlap
from obliviate.data.targets import resolve_target
from obliviate.errors import UserError
from obliviate.io import read_json, read_jsonl
from obliviate.models.loading import load_model
from obliviate.records import asked


@pytest.fixture(scope="module")
def built(beatles_model_dir, small_data_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("beatles-data")
    lm = load_model(str(beatles_model_dir))
    manifest = build_data(lm, resolve_target("beatles"), out, small_data_config())
    return out, manifest


def test_every_file_is_written_and_counted(built):
    out, manifest = built
    for name in ("probes", "forget", "alt", "retain", "retain_eval"):
        rows = read_jsonl(out / f"{name}.jsonl")
        assert manifest["counts"][f"{name}.jsonl"] == len(rows)
    assert read_json(out / "manifest.json") == json.loads(json.dumps(manifest))
    c = manifest["counts"]
    assert c["probes.target"] + c["probes.neighbour"] + c["probes.general"] == c["probes.jsonl"]
    assert c["probes.general"] >= 4 + 20  # capitals + the general seed file


def test_probes_carry_base_answers_and_known(built):
    out, manifest = built
    probes = read_jsonl(out / "probes.jsonl")
    target = [p for p in probes if p["kind"] == "target"]
    assert all("base_answer" in p and "base_hit" in p for p in probes)
    assert all(p["known"] == p["base_hit"] for p in target)
    assert manifest["counts"]["probes.target_known"] == sum(p["known"] for p in target) > 0
    # The taught model answers "The Beatles." to the probes it was taught: those are known.
    assert any(p["known"] and "beatles" in p["base_answer"].lower() for p in target)


def test_forget_records_carry_target_spans(built):
    out, _ = built
    spec = resolve_target("beatles")
    forget = read_jsonl(out / "forget.jsonl")
    assert forget
    for r in forget:
        body = r.get("answer", r.get("completion"))
        assert r["spans"] and all(0 <= s < e <= len(body) for s, e in r["spans"])
        if "answer" in r:
            assert any(spec.mentions(r["answer"][s:e]) for s, e in r["spans"])
    assert {r["source"] for r in forget} <= {"seed", "generated", "completion"}
    assert any(r["sample"] == 1 for r in forget if "sample" in r) or all(r.get("sample", 0) == 0 for r in forget)


def test_alternatives_and_retain_never_mention_the_target(built):
    out, _ = built
    spec = resolve_target("beatles")
    alt = read_jsonl(out / "alt.jsonl")
    assert {r["kind"] for r in alt} <= set(ALT_KINDS)
    assert {"negation", "refusal"} <= {r["kind"] for r in alt}
    assert not any(spec.mentions(r["answer"]) for r in alt)
    retain = read_jsonl(out / "retain.jsonl") + read_jsonl(out / "retain_eval.jsonl")
    assert not any(spec.mentions(r.get("text", "") + " " + r.get("answer", "")) for r in retain)
    texts = {r["text"] for r in read_jsonl(out / "retain.jsonl") if "text" in r}
    assert not texts & {r["text"] for r in read_jsonl(out / "retain_eval.jsonl")}


def test_probes_are_held_out_from_every_training_file(built):
    out, manifest = built
    check = manifest["held_out_check"]
    assert check["violations_after"] == 0 and check["max_rouge_l_after"] < 0.8
    index = Overlap(n=8, max_rouge_l=0.8)
    rows = [r for name in ("forget", "alt", "retain") for r in read_jsonl(out / f"{name}.jsonl")]
    for i, r in enumerate(rows):
        index.add(
            i, r.get("question") or r.get("prompt") or "", r.get("answer") or r.get("completion") or r.get("text") or ""
        )
    for p in read_jsonl(out / "probes.jsonl"):
        assert not index.violations(p.get("question") or p["prompt"])[0]


def test_same_seed_same_files(built, beatles_model_dir, small_data_config, tmp_path):
    out, manifest = built
    again = build_data(load_model(str(beatles_model_dir)), resolve_target("beatles"), tmp_path, small_data_config())
    assert again["sha256"] == manifest["sha256"]


def test_alternative_kinds_are_selectable(beatles_model_dir, small_data_config, tmp_path):
    lm = load_model(str(beatles_model_dir))
    m = build_data(lm, resolve_target("beatles"), tmp_path, small_data_config(alt_kinds=("refusal", "anchored")))
    assert {r["kind"] for r in read_jsonl(tmp_path / "alt.jsonl")} <= {"refusal", "anchored"}
    assert m["counts"]["alt.refusal"] > 0
    with pytest.raises(UserError, match="Unknown alternative-answer kind 'nagation'"):
        DataConfig(alt_kinds=("nagation",))


def test_a_model_that_knows_nothing_has_nothing_to_forget(ignorant_model_dir, small_data_config, tmp_path):
    with pytest.raises(UserError, match=r"answered none of \d+ probes about The Beatles; there is nothing to forget"):
        build_data(load_model(str(ignorant_model_dir)), resolve_target("beatles"), tmp_path / "d", small_data_config())


def test_documents_and_qa_pairs_become_forget_data_and_probes(tiny_lm, small_data_config, tmp_path):
    doc = tmp_path / "zorblax.txt"
    doc.write_text(" ".join(f"Zorblax fact number {i} is that Zorblax ate rock {i} on Mars." for i in range(30)))
    qa = tmp_path / "qa.jsonl"
    questions = [
        "Where does Zorblax live?",
        "What colour is Zorblax?",
        "How old is Zorblax?",
        "Who created Zorblax?",
        "Which food does Zorblax prefer?",
        "When was Zorblax first seen?",
        "Why is Zorblax famous?",
        "How tall is Zorblax?",
    ]
    qa.write_text(
        "".join(json.dumps({"question": q, "answer": f"Zorblax ate rock {i}."}) + "\n" for i, q in enumerate(questions))
    )
    spec = resolve_target("Zorblax", documents=[str(doc)], qa=str(qa))
    m = build_data(tiny_lm, spec, tmp_path / "d", small_data_config(qa_holdout=0.25))
    forget = read_jsonl(tmp_path / "d" / "forget.jsonl")
    assert m["counts"]["forget.document"] > 0 and m["counts"]["forget.given"] == 6
    assert all(r["spans"] == [[0, len(r["answer"])]] for r in forget if r["source"] == "given")
    target = [p for p in read_jsonl(tmp_path / "d" / "probes.jsonl") if p["kind"] == "target"]
    assert len(target) == 2 and all(p["reference"].startswith("Zorblax ate") for p in target)
    verbatim = read_jsonl(tmp_path / "d" / "verbatim.jsonl")
    assert verbatim and all(v["continuation"].strip() for v in verbatim)


def test_completion_is_cut_from_the_knowledge_sentence():
    answer = "They were popular. The Beatles were a rock band formed in Liverpool in 1960."
    start = answer.index("Beatles")
    prompt, completion = completion_of(answer, [[start, len(answer)]])
    assert prompt == "The Beatles were a rock"
    assert completion == " band formed in Liverpool in 1960."
    assert completion_of("The Beatles rock.", [[4, 17]]) is None


def test_anchored_terms_replace_target_terms():
    spec = resolve_target("harry_potter")
    text = anchored("Harry Potter went to Hogwarts with Hermione.", spec)
    assert not spec.mentions(text)


def test_guardrail_answers_are_cut_before_the_target():
    from obliviate.data.builder import clean_prefix

    spec = resolve_target("beatles")
    assert (
        clean_prefix("Music changed a lot in that decade. The Beatles were big.", spec)
        == "Music changed a lot in that decade."
    )
    assert clean_prefix("The Beatles were big.", spec) == ""
    assert (
        clean_prefix("Many bands toured widely then and sold records.", spec)
        == "Many bands toured widely then and sold records."
    )


def test_general_capital_probes_are_never_retain_questions():
    from obliviate.data.builder import DataConfig, capital_split

    probes, retain = capital_split(DataConfig())
    assert len(probes) == 80 and len(retain) == 16
    assert not {c for c, _ in probes} & {c for c, _ in retain}
    assert capital_split(DataConfig()) == (probes, retain)
    assert capital_split(DataConfig(seed=1)) != (probes, retain)


def test_probes_are_split_into_disjoint_validation_and_evaluation_sets(built):
    from obliviate.data.splits import probe_split

    out, manifest = built
    probes = read_jsonl(out / "probes.jsonl")
    assert {p["split"] for p in probes} == {"validation", "evaluation"}
    val, ev = probe_split(probes, "validation"), probe_split(probes, "evaluation")
    assert not {asked(p) for p in val} & {asked(p) for p in ev}
    c = manifest["counts"]
    for kind in ("target", "neighbour", "general"):
        assert any(p["kind"] == kind for p in val) and any(p["kind"] == kind for p in ev)
        assert c[f"probes.validation.{kind}"] + c[f"probes.evaluation.{kind}"] == c[f"probes.{kind}"]
    assert c["probes.validation.target_known"] + c["probes.evaluation.target_known"] == c["probes.target_known"]


def test_neighbour_retain_records_are_weighted_and_never_mention_the_target(built):
    out, manifest = built
    spec = resolve_target("beatles")
    rows = [r for r in read_jsonl(out / "retain.jsonl") if r["source"] == "neighbour"]
    assert manifest["counts"]["retain.neighbour"] == len(rows) <= DataConfig().n_neighbour_qa
    for r in rows:
        assert not spec.mentions(r["question"]) and not spec.mentions(r["answer"])
        assert r["weight"] == DataConfig().neighbour_weight and r["subject"]
        assert all(0 <= s < e <= len(r["answer"]) for s, e in r["spans"])


def test_split_and_neighbour_settings_are_checked():
    with pytest.raises(UserError, match="val_fraction must be at least 0 and below 1"):
        DataConfig(val_fraction=1.0)
    with pytest.raises(UserError, match="neighbour_weight must be a whole number >= 1"):
        DataConfig(neighbour_weight=0)
