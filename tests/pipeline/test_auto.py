"""`--method auto`: candidates compared on the validation probes only, the best kept, the budget respected."""

import json

import pytest

import obliviate
from obliviate.data.splits import probe_split
from obliviate.evaluation.config import EvalConfig
from obliviate.io import read_jsonl
from obliviate.models.loading import load_model
from obliviate.pipeline import auto
from obliviate.pipeline.auto import Bar, Candidate, search
from obliviate.pipeline.run import RECORD_STREAMS

# Small evaluation settings for the tiny model: few attack probes, two relearning steps, one process.
ECFG = EvalConfig(attack_probes=4, mia_records=4, keep_loss_probes=4, relearn_steps=2, relearn_records=4, fork=False)
WEAK = Candidate("ga", train={"steps": 1, "lr": 1e-7})  # changes nothing: the leak stays
STRONG = Candidate("ga", train={"steps": 8, "lr": 1e-3})  # forgets the taught fact
# A bar the strong candidate meets on the tiny model: half the validation leak gone, utility unconstrained.
LOOSE = Bar(leak_cut=0.5, neighbour_qa_drop=1.0, general_qa_drop=1.0, ppl_rise=1e6, relearn_leak=1.0, refusal_rise=1.0)


@pytest.fixture(scope="module")
def data_dir(beatles_model_dir, tmp_path_factory, small_data_config):
    out = tmp_path_factory.mktemp("auto") / "data"
    obliviate.pipeline.build_data_dir(
        "beatles", out, model=str(beatles_model_dir), config=small_data_config(), log=lambda m: None
    )
    return out


def _records(data_dir):
    return {name: read_jsonl(data_dir / f"{name}.jsonl") for name in RECORD_STREAMS}


def _search(beatles_model_dir, data_dir, **kw):
    lm = load_model(str(beatles_model_dir))
    return search(lm, _records(data_dir), data_dir, ECFG, progress=False, log=lambda m: None, **kw)


def test_auto_keeps_the_candidate_that_meets_the_bar(beatles_model_dir, data_dir):
    found = _search(beatles_model_dir, data_dir, candidates=(WEAK, STRONG), bar=LOOSE, budget=1e6)
    assert found.chosen == STRONG and found.met_bar
    weak, strong = found.rows
    assert not weak["meets_bar"] and strong["meets_bar"] and strong["chosen"] and not weak["chosen"]
    assert strong["leak_rate"] <= 0.5 * found.base["leak_rate"]
    summary = found.summary()
    assert [r["candidate"] for r in summary["candidates"]] == [WEAK.label, STRONG.label]
    json.dumps(summary)  # train_summary.json holds it


def test_auto_hands_back_the_chosen_candidates_weights(beatles_model_dir, data_dir):
    """WEAK after STRONG: the model returned holds STRONG's weights, not those of the last candidate tried."""
    found = _search(beatles_model_dir, data_dir, candidates=(STRONG, WEAK), bar=LOOSE, budget=1e6)
    assert found.chosen == STRONG
    base = load_model(str(beatles_model_dir)).model.state_dict()
    assert any(not (v == base[k]).all() for k, v in found.model.state_dict().items())


def test_auto_respects_its_budget(beatles_model_dir, data_dir):
    """A budget used up by the first candidate: the first always runs, no other starts."""
    found = _search(beatles_model_dir, data_dir, candidates=(WEAK, STRONG), bar=LOOSE, budget=1e-3)
    assert [r["candidate"] for r in found.rows] == [WEAK.label]
    assert found.chosen == WEAK and not found.met_bar


def test_auto_reads_only_validation_probes(beatles_model_dir, data_dir, monkeypatch):
    """Every evaluation the search makes sees validation probes and nothing else; the evaluation probes exist."""
    seen = []
    real = auto.evaluate_model

    def spy(model, tokenizer, data, *args, **kw):
        seen.append([p["split"] for p in data.probes])
        return real(model, tokenizer, data, *args, **kw)

    monkeypatch.setattr(auto, "evaluate_model", spy)
    _search(beatles_model_dir, data_dir, candidates=(STRONG,), bar=LOOSE, budget=1e6)
    assert len(seen) == 2  # the base, then the candidate
    assert all(splits and set(splits) == {"validation"} for splits in seen)
    assert probe_split(read_jsonl(data_dir / "probes.jsonl"), "evaluation")


def test_training_records_hold_no_probes(data_dir):
    records = _records(data_dir)
    probes = {p.get("question") or p.get("prompt") for p in read_jsonl(data_dir / "probes.jsonl")}
    assert "probes" not in records
    assert not [r for rows in records.values() for r in rows if (r.get("question") or r.get("prompt")) in probes]


def test_forget_with_auto_writes_the_candidates_table(beatles_model_dir, data_dir, tmp_path):
    metrics = obliviate.forget(
        data_dir=data_dir,
        model=str(beatles_model_dir),
        method="auto",
        budget=1e-3,
        eval=ECFG,
        out=tmp_path / "run",
        progress=False,
        log=lambda m: None,
    )
    chosen = metrics["train"]["auto"]
    assert metrics["method"] == "auto" and metrics["chosen_method"] == chosen["method"] == auto.CANDIDATES[0].method
    assert len(chosen["candidates"]) == 1  # the budget let only the first candidate run
    report = (tmp_path / "run" / "report.md").read_text()
    assert "How the method was chosen" in report and f"`{chosen['chosen']}`" in report
    assert "refusals on other probes" in report and "refusals on neighbour and general probes up at most" in report
    assert (tmp_path / "run" / "auto" / "candidate-0.jsonl").is_file()


def test_auto_refuses_method_settings(data_dir, tmp_path):
    from obliviate.errors import UserError

    with pytest.raises(UserError, match="auto"):
        obliviate.forget(data_dir=data_dir, method="auto", method_options={"beta": 0.2}, out=tmp_path / "r")
    with pytest.raises(UserError, match="budget"):
        obliviate.forget(data_dir=data_dir, method="auto", budget=0, out=tmp_path / "r")


def test_a_diverged_candidate_ranks_below_one_that_trained():
    from obliviate.pipeline.auto import _rank

    misses = {"leak_cut": 0.1, "neighbour_qa_drop": 0.0, "general_qa_drop": 0.0, "ppl_rise": 0.0}
    trained = {"meets_bar": False, "diverged": False, "misses": misses, "attack_worst_leak_rate": 0.5}
    diverged = {**trained, "diverged": True, "misses": {**misses, "leak_cut": 0.0}, "attack_worst_leak_rate": 0.0}
    assert sorted([diverged, trained], key=_rank) == [trained, diverged]


def test_the_bar_counts_the_leak_after_relearning():
    base = {"leak_rate": 1.0, "neighbour_qa_accuracy": 0.5, "general_qa_accuracy": 0.5, "retain_perplexity": 10.0}
    after = {**base, "leak_rate": 0.05, "attack_worst_leak_rate": 0.45}
    misses = Bar().misses(base, after)
    assert misses["relearn_leak"] == pytest.approx(0.30) and misses["leak_cut"] == 0.0
    assert not any(Bar().misses(base, {**after, "attack_worst_leak_rate": 0.1}).values())


def test_the_bar_counts_refusals_that_spread_to_other_probes():
    """Refusing the target is the point of refusal training; refusing a quarter of the benign questions is not."""
    base = {"leak_rate": 1.0, "general_qa_accuracy": 0.5, "retain_perplexity": 10.0, "refusal_rate": 0.002}
    after = {**base, "leak_rate": 0.0, "attack_worst_leak_rate": 0.1, "refusal_rate": 0.266}
    assert Bar().misses(base, after)["refusal_rise"] == pytest.approx(0.214)
    assert not any(Bar().misses(base, {**after, "refusal_rate": 0.03}).values())


def test_a_behaviour_target_gets_refusal_training_candidates(beatles_model_dir, data_dir, monkeypatch):
    """Harmful requests are a behaviour target: auto's default candidates train refusals, and its first one runs."""
    from obliviate.evaluation.config import EvalData

    monkeypatch.setattr(EvalData, "behaviour", property(lambda self: True))
    found = _search(beatles_model_dir, data_dir, bar=LOOSE, budget=1e-3)
    assert found.chosen == auto.BEHAVIOUR_CANDIDATES[0] and found.chosen.method == "relabel"
    assert found.chosen.options["alt_kinds"] == ("refusal",) and [r["method"] for r in found.rows] == ["relabel"]
    monkeypatch.setattr(EvalData, "behaviour", property(lambda self: False))
    assert _search(beatles_model_dir, data_dir, bar=LOOSE, budget=1e-3).chosen == auto.CANDIDATES[0]
