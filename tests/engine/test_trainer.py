"""The training loop: a few steps of every method, the divergence guard, determinism, logging."""

import copy
import json
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.engine import TrainConfig, TrainResult, has_checkpoint, train
from obliviate.methods import METHODS, LossOutput, get_method
from obliviate.methods.ga import GradientAscent
from obliviate.models.logprobs import sequence_logprob


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 3, "lr": 1e-3, "batch_size": 2, "bf16": False, **kw})


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def data(forget_records, retain_records):
    alt = [
        {"question": r["question"], "answer": a, "kind": k}
        for r in forget_records
        for k, a in (
            ("negation", "I don't know of them."),
            ("mismatch", "Paris is in France."),
            ("refusal", "I can't say."),
        )
    ]
    return {"forget": forget_records, "retain": retain_records, "alt": alt}


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.trains))
def test_three_steps_of_every_method(name, tiny_lm, data):
    model, tokenizer = tiny_lm.model, tiny_lm.tokenizer
    method = get_method(name)
    before = _params(model)
    seen = []
    loss_fn = method.loss

    def spy(m, batch, ref=None):
        seen.append((m, ref, set(batch)))
        batches.append(batch)
        return loss_fn(m, batch, ref)

    batches = []
    start = copy.deepcopy(model).eval()

    method.loss = spy
    result = train(model, tokenizer, method, data, _cfg(), progress=False)

    assert isinstance(result, TrainResult)
    assert result.steps_done == 3 and result.diverged_at is None
    assert math.isfinite(result.last_logs["loss"])
    assert all(math.isfinite(v) for v in result.last_logs.values())
    assert not model.training  # handed back in eval mode

    after = dict(model.named_parameters())
    unchanged = [k for k, v in before.items() if method.trainable(k) and torch.equal(v, after[k].detach())]
    assert not unchanged, f"{name}: parameters that did not move: {unchanged}"
    frozen_moved = [k for k, v in before.items() if not method.trainable(k) and not torch.equal(v, after[k].detach())]
    assert not frozen_moved, f"{name}: parameters outside the method's selection moved: {frozen_moved}"

    prepared = method.prepare(data)
    expected = {sub for n in method.batches for sub in method.collate(tokenizer, n, prepared[n][:1], 32)}
    assert len(seen) == 3 and all(batches == expected for _, _, batches in seen)
    refs = {id(ref) for _, ref, _ in seen}
    if method.ref_logprob_subs:
        # No reference copy: its log-probs were computed once from the starting weights.
        assert refs == {id(None)}
        for batch in batches:
            for sub in method.ref_logprob_subs:
                with torch.no_grad():
                    expected_lp, _ = sequence_logprob(
                        start, {k: v for k, v in batch[sub].items() if k != "ref_logprob"}
                    )
                assert_close(batch[sub]["ref_logprob"], expected_lp, atol=1e-2, rtol=1e-3)
    elif method.needs_ref_model:
        ref = seen[0][1]
        assert len(refs) == 1 and ref is not None and ref is not model
        assert not any(p.requires_grad for p in ref.parameters())
        # The reference is the frozen start point: still equal to the weights before training.
        for k, v in ref.named_parameters():
            assert torch.equal(v, before[k]), f"{name}: reference weight {k} moved"
    else:
        assert refs == {id(None)}


def test_gradient_accumulation(tiny_lm, data):
    before = _params(tiny_lm.model)
    result = train(
        tiny_lm.model, tiny_lm.tokenizer, get_method("gd"), data, _cfg(steps=2, grad_accum=2), progress=False
    )
    assert result.steps_done == 2 and math.isfinite(result.last_logs["loss"])
    after = dict(tiny_lm.model.named_parameters())
    assert not [k for k, v in before.items() if torch.equal(v, after[k].detach())]


def test_missing_sub_batch_is_refused(tiny_lm, forget_records):
    with pytest.raises(ValueError, match="retain"):
        train(
            tiny_lm.model,
            tiny_lm.tokenizer,
            get_method("gd"),
            {"forget": forget_records, "retain": []},
            _cfg(),
            progress=False,
        )


def test_same_seed_same_weights(tiny_model_dir, data):
    from obliviate.models.loading import load_model

    runs = []
    for _ in range(2):
        lm = load_model(str(tiny_model_dir))
        train(lm.model, lm.tokenizer, get_method("gd"), data, _cfg(steps=2), progress=False)
        runs.append(_state(lm.model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_log_file_gets_one_json_line_per_step(tiny_lm, data, tmp_path):
    log = tmp_path / "train_log.jsonl"
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(), log_path=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "forget_nll", "seconds"} <= set(r) for r in rows)


class _NaNAtStep(GradientAscent):
    """GA whose loss (or one logged term) is NaN on a chosen call; never registered."""

    name = "nan-at-step"

    def __init__(self, bad_step: int, where: str = "loss"):
        super().__init__()
        self.bad_step, self.where, self.calls = bad_step, where, 0

    def loss(self, model, batch, ref=None) -> LossOutput:
        self.calls += 1
        out = super().loss(model, batch, ref)
        if self.calls == self.bad_step:
            if self.where == "loss":
                return LossOutput(out.loss * float("nan"), out.logs)
            return LossOutput(out.loss, {**out.logs, "extra": float("nan")})
        return out


@pytest.mark.parametrize("where", ["loss", "logs"])
def test_divergence_restores_the_last_snapshot(tiny_lm, data, where):
    model = tiny_lm.model
    start = _state(model)
    result = train(model, tiny_lm.tokenizer, _NaNAtStep(2, where), data, _cfg(steps=5), progress=False)
    assert "nan-at-step" not in METHODS
    assert result.diverged_at == 2
    assert result.restored_step == 0
    assert result.steps_done == 0  # the weights held are step 0's
    assert all(math.isfinite(v) for v in result.last_logs.values())
    now = model.state_dict()
    assert all(torch.equal(start[k], now[k]) for k in start), "weights differ from the step-0 snapshot"


def test_divergence_restores_a_later_snapshot(tiny_lm, data):
    model = tiny_lm.model
    start = _state(model)
    result = train(model, tiny_lm.tokenizer, _NaNAtStep(3), data, _cfg(steps=5, snapshot_every=2), progress=False)
    assert (result.diverged_at, result.restored_step, result.steps_done) == (3, 2, 2)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert not all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_a_checkpoint_written_after_the_restored_snapshot_is_dropped(tiny_lm, data, tmp_path):
    """Checkpoints at steps 1 and 2 lie on the way to the divergence at step 3 (snapshot: step 0), so none is
    left for --resume; one at or before the snapshot stays."""
    from obliviate.engine.trainer import has_checkpoint

    cfg = _cfg(steps=5, checkpoint_every=1, snapshot_every=10)
    train(tiny_lm.model, tiny_lm.tokenizer, _NaNAtStep(3), data, cfg, checkpoint_dir=tmp_path / "a", progress=False)
    assert not has_checkpoint(tmp_path / "a")
    cfg = _cfg(steps=5, checkpoint_every=2, snapshot_every=2)
    train(tiny_lm.model, tiny_lm.tokenizer, _NaNAtStep(3), data, cfg, checkpoint_dir=tmp_path / "b", progress=False)
    assert has_checkpoint(tmp_path / "b")


def test_divergence_under_bf16_weights_restores_the_snapshot_from_its_file(tiny_lm, data, monkeypatch, tmp_path):
    """With bf16_weights the snapshot lives in a temporary file, which is removed at the end."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tiny_lm.model
    start = {k: v.bfloat16().float() for k, v in _state(model).items()}  # the weights as bf16 holds them
    result = train(model, tiny_lm.tokenizer, _NaNAtStep(2), data, _cfg(steps=5, bf16_weights=True), progress=False)
    assert (result.diverged_at, result.restored_step) == (2, 0)
    now = model.state_dict()
    assert all(torch.equal(start[k], now[k]) for k in start)
    assert not list(tmp_path.iterdir())


def test_two_runs_with_different_precision_in_one_process(tiny_lm, data):
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(steps=1, bf16=False), progress=False)
    result = train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(steps=1, bf16=True), progress=False)
    assert result.steps_done == 1


def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_model_dir, data, tmp_path):
    from obliviate.models.loading import load_model

    cfg = _cfg(steps=6, checkpoint_every=3, dropout=0.1)
    lm = load_model(str(tiny_model_dir))
    train(lm.model, lm.tokenizer, get_method("npo"), data, cfg, progress=False)
    straight = _state(lm.model)

    class Interrupt(Exception):
        pass

    method = get_method("npo")
    calls = {"n": 0}
    loss_fn = method.loss

    def dies_at_step_5(model, batch, ref=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return loss_fn(model, batch, ref)

    method.loss = dies_at_step_5
    lm = load_model(str(tiny_model_dir))
    log = tmp_path / "train_log.jsonl"
    with pytest.raises(Interrupt):
        train(lm.model, lm.tokenizer, method, data, cfg, log_path=log, progress=False, checkpoint_dir=tmp_path / "ckpt")
    assert has_checkpoint(tmp_path / "ckpt")

    lm = load_model(str(tiny_model_dir))
    result = train(
        lm.model,
        lm.tokenizer,
        get_method("npo"),
        data,
        cfg,
        log_path=log,
        progress=False,
        checkpoint_dir=tmp_path / "ckpt",
        resume=True,
    )
    assert result.resumed_from == 3 and result.steps_done == 6
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    resumed = _state(lm.model)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_early_stop_on_the_validation_split(tiny_lm, data):
    cfg = _cfg(steps=30, stop_forget_nll_gain=0.5, eval_every=1, val_fraction=0.3)
    result = train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, cfg, progress=False)
    assert result.stopped_early_at is not None and result.stopped_early_at < 30
    assert result.steps_done == result.stopped_early_at
    assert result.validation[0]["step"] == 0
    assert result.validation[-1]["forget_nll"] - result.validation[0]["forget_nll"] >= 0.5


def test_validation_split_keeps_every_sample_of_a_question_on_one_side():
    from obliviate.engine.trainer import validation_split

    records = [{"question": f"q{i}", "answer": f"a{j}"} for i in range(10) for j in range(3)]
    train_part, val = validation_split(records, 0.2, seed=0)
    assert len(val) == 6 and len(train_part) == 24
    assert not {r["question"] for r in val} & {r["question"] for r in train_part}


def test_lora_trains_an_adapter_and_merges_it(tiny_lm, data):
    model = tiny_lm.model
    before = _state(model)
    seen = []
    method = get_method("npo")
    loss_fn = method.loss

    def spy(m, batch, ref=None):
        seen.append(ref)
        return loss_fn(m, batch, ref)

    method.loss = spy
    result = train(model, tiny_lm.tokenizer, method, data, _cfg(lora=True, lora_r=4), progress=False)
    assert result.model is model  # merged back into the same network
    assert set(model.state_dict()) == set(before)  # no adapter weights left
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    from obliviate.engine.trainer import AdapterOff

    assert isinstance(seen[0], AdapterOff)


def test_lora_reference_is_the_model_without_its_adapter(tiny_lm, data):
    from obliviate.engine.trainer import AdapterOff

    ids = torch.tensor([[1, 2, 3, 4]])
    base_logits = tiny_lm.model(input_ids=ids).logits.detach()
    result = train(
        tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(lora=True, keep_adapter=True), progress=False
    )
    peft_model = result.model
    assert not torch.allclose(peft_model(input_ids=ids).logits, base_logits)
    assert torch.allclose(AdapterOff(peft_model)(input_ids=ids).logits, base_logits)
    trained = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)


def test_l2_to_base_holds_the_weights_closer(tiny_model_dir, data):
    from obliviate.models.loading import load_model

    drift = {}
    for l2 in (0.0, 100.0):
        lm = load_model(str(tiny_model_dir))
        start = _params(lm.model)
        result = train(lm.model, lm.tokenizer, get_method("ga"), data, _cfg(steps=4, l2=l2), progress=False)
        drift[l2] = sum(((p.detach() - start[n]) ** 2).sum().item() for n, p in lm.model.named_parameters())
        assert ("l2" in result.last_logs) == bool(l2)
    assert drift[100.0] < drift[0.0]


def test_dropout_is_on_while_training_and_restored_after(tiny_lm, data):
    attn = [m for m in tiny_lm.model.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    assert attn and all(m.attention_dropout == 0.0 for m in attn)
    seen = []
    method = get_method("ga")
    loss_fn = method.loss

    def spy(m, batch, ref=None):
        seen.append([a.attention_dropout for a in attn])
        return loss_fn(m, batch, ref)

    method.loss = spy
    train(tiny_lm.model, tiny_lm.tokenizer, method, data, _cfg(steps=1, dropout=0.2), progress=False)
    assert seen == [[0.2] * len(attn)]
    assert all(m.attention_dropout == 0.0 for m in attn)


def test_resume_with_other_training_settings_is_refused(tiny_lm, data, tmp_path):
    from obliviate.errors import UserError

    cfg = _cfg(steps=2, checkpoint_every=1)
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, cfg, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match="other training settings"):
        train(
            tiny_lm.model,
            tiny_lm.tokenizer,
            get_method("ga"),
            data,
            _cfg(steps=3, lora=True),
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_bf16_weights_train_and_hand_back_the_models_precision(tiny_lm, data):
    model = tiny_lm.model
    before = _params(model)
    result = train(model, tiny_lm.tokenizer, get_method("npo"), data, _cfg(bf16_weights=True), progress=False)
    assert result.steps_done == 3 and math.isfinite(result.last_logs["loss"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    moved = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(moved) == len(before)


def test_training_on_cpu_uses_eager_attention_and_restores_the_models_own(tiny_lm, data):
    model = tiny_lm.model
    model.set_attn_implementation("sdpa")
    seen = []
    method = get_method("ga")
    loss_fn = method.loss

    def spy(m, batch, ref=None):
        seen.append(m.config._attn_implementation)
        return loss_fn(m, batch, ref)

    method.loss = spy
    train(model, tiny_lm.tokenizer, method, data, _cfg(steps=1), progress=False)
    assert seen == ["eager"] and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("lora", [False, True])
def test_low_memory_checkpoints_activations_trains_the_same_weights_and_switches_off_after(tiny_lm, data, lora):
    twin = copy.deepcopy(tiny_lm.model)
    calls = []
    mlp = type(tiny_lm.model.model.layers[0].mlp)
    forward = mlp.forward
    # A checkpointed layer runs again in the backward pass: more MLP calls for the same steps.
    mlp.forward = lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    try:
        train(
            tiny_lm.model, tiny_lm.tokenizer, get_method("npo"), data, _cfg(low_memory=True, lora=lora), progress=False
        )
        checkpointed = len(calls)
        calls.clear()
        train(twin, tiny_lm.tokenizer, get_method("npo"), data, _cfg(lora=lora), progress=False)
    finally:
        mlp.forward = forward
    assert checkpointed > len(calls) > 0
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tiny_lm.model.modules())
    for (name, a), b in zip(tiny_lm.model.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_record_weight_is_how_often_it_appears_in_each_pass():
    """Records a (weight 3), b (no weight), c (weight 1): a pass of 5 draws holds a three times, b and c once."""
    from collections import Counter

    from obliviate.engine.trainer import _Stream

    records = [{"text": "a", "weight": 3}, {"text": "b"}, {"text": "c", "weight": 1}]
    stream = _Stream(records, "seed")
    assert Counter(stream.take(5)) == {0: 3, 1: 1, 2: 1}
    assert Counter(stream.take(10)) == {0: 6, 1: 2, 2: 2}  # two more whole passes


def test_the_idk_term_teaches_the_declining_answer_to_forget_questions(tiny_model_dir, data):
    """With idk > 0 the loss gains idk * NLL(forget question -> negation answer), logged as idk_nll, and
    training lowers that NLL; with idk = 0 nothing of it runs."""
    from obliviate.engine.trainer import idk_records
    from obliviate.models.loading import load_model
    from obliviate.models.logprobs import nll
    from obliviate.models.prompts import encode

    declining = idk_records(data["alt"])
    assert {r["kind"] for r in declining} == {"negation"}
    lm = load_model(str(tiny_model_dir))
    batch = encode(lm.tokenizer, declining, 160)
    with torch.no_grad():
        before = nll(lm.model, batch).item()
    result = train(lm.model, lm.tokenizer, get_method("gd"), data, _cfg(steps=6, idk=5.0), progress=False)
    assert "idk_nll" in result.last_logs
    with torch.no_grad():
        assert nll(lm.model, batch).item() < before
    plain = train(load_model(str(tiny_model_dir)).model, lm.tokenizer, get_method("gd"), data, _cfg(), progress=False)
    assert "idk_nll" not in plain.last_logs


def test_the_idk_term_without_declining_answers_is_refused(tiny_lm, data):
    from obliviate.errors import UserError

    no_alt = {**data, "alt": [r for r in data["alt"] if r["kind"] == "mismatch"]}
    with pytest.raises(UserError, match="negation or refusal"):
        train(tiny_lm.model, tiny_lm.tokenizer, get_method("gd"), no_alt, _cfg(idk=1.0), progress=False)


class _PlantedCode:
    """A pickle that creates a file when it is unpickled: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _checkpointed(lm, data, folder, method="ga"):
    """`folder` holding the checkpoint of step 1 of a 2-step run; returns the model's weights after it."""
    train(
        lm.model,
        lm.tokenizer,
        get_method(method),
        data,
        _cfg(steps=2, checkpoint_every=1),
        progress=False,
        checkpoint_dir=folder,
    )
    assert has_checkpoint(folder)
    return _state(lm.model)


def _resume(lm, data, folder, method="ga"):
    return train(
        lm.model,
        lm.tokenizer,
        get_method(method),
        data,
        _cfg(steps=2),
        progress=False,
        checkpoint_dir=folder,
        resume=True,
    )


def test_a_checkpoint_holding_code_is_refused_and_never_run(tiny_lm, data, tmp_path):
    """A crafted pickle planted in tensors.pt, the checkpoint's one pickled file, is refused unrun."""
    from obliviate.errors import UserError

    start = _checkpointed(tiny_lm, data, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _PlantedCode(marker), "torch_rng": []}, tmp_path / "latest" / "tensors.pt")
    with pytest.raises(UserError, match="not a plain obliviate checkpoint"):
        _resume(tiny_lm, data, tmp_path)
    assert not marker.exists(), "the checkpoint's code ran"
    assert all(torch.equal(start[k], v) for k, v in tiny_lm.model.state_dict().items())


def _cut_short(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda f: _cut_short(f / "trainable.safetensors"), "not a plain obliviate checkpoint"),
        (lambda f: _cut_short(f / "tensors.pt"), "not a plain obliviate checkpoint"),
        (lambda f: (f / "state.json").write_text('{"format": 1, "step"'), "not a plain obliviate checkpoint"),
        (lambda f: (f / "state.json").write_text('{"format": 99}'), "not an obliviate checkpoint of this version"),
        (lambda f: (f / "state.json").write_text('{"format": 1}'), "not a plain obliviate checkpoint"),
        (lambda f: (f / "tensors.pt").unlink(), "has no tensors.pt"),
    ],
    ids=["truncated-weights", "truncated-tensors", "bad-json", "other-format", "fields-missing", "file-missing"],
)
def test_a_damaged_checkpoint_is_one_sentence(damage, words, tiny_lm, data, tmp_path):
    from obliviate.errors import UserError

    _checkpointed(tiny_lm, data, tmp_path)
    damage(tmp_path / "latest")
    with pytest.raises(UserError, match=words) as e:
        _resume(tiny_lm, data, tmp_path)
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)


def _two_processes(folder):
    """The checkpoint as if 2 training processes had written it: each process's part twice."""
    state = json.loads((folder / "state.json").read_text())
    tensors = torch.load(folder / "tensors.pt", weights_only=True)
    state["ranks"] *= 2
    tensors["torch_rng"] *= 2
    (folder / "state.json").write_text(json.dumps(state))
    torch.save(tensors, folder / "tensors.pt")


def _no_reference(folder):
    state = json.loads((folder / "state.json").read_text())
    state["ranks"][0]["ref_logprobs"] = {}
    (folder / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    "change, words",
    [(_two_processes, "written by 2 training processes"), (_no_reference, "holds no reference log-probs")],
    ids=["other-world-size", "no-reference-log-probs"],
)
def test_resume_from_a_checkpoint_of_another_launch_is_refused(change, words, tiny_lm, data, tmp_path):
    from obliviate.errors import UserError

    _checkpointed(tiny_lm, data, tmp_path, "npo")
    change(tmp_path / "latest")
    with pytest.raises(UserError, match=words):
        _resume(tiny_lm, data, tmp_path, "npo")


def test_a_checkpoint_holds_no_pickle_but_tensors_pt_and_its_weights_load_with_safetensors_alone(
    tiny_lm, data, tmp_path
):
    """The weights are safetensors and every plain value JSON; tensors.pt holds only the optimizer and RNG states
    and loads as plain tensors (weights_only)."""
    from safetensors import safe_open

    _checkpointed(tiny_lm, data, tmp_path, "npo")
    folder = tmp_path / "latest"
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.pt", "trainable.safetensors"]
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert path.name == "tensors.pt" or head[:1] != b"\x80" and head != b"PK", f"{path.name} is a pickle"
    state = json.loads((folder / "state.json").read_text())
    assert state["format"] == 1 and state["step"] == 1 and state["ranks"][0]["ref_logprobs"]["forget"]
    with safe_open(str(folder / "trainable.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(state["trainable"])
        assert all(f.get_tensor(name).size for name in f.keys())
    assert set(torch.load(folder / "tensors.pt", weights_only=True)) == {"optimizer", "torch_rng"}


def test_a_kill_between_the_checkpoints_two_renames_resumes_from_the_previous_one(tiny_lm, data, tmp_path):
    """atomic_dir sets the old checkpoint aside (.latest.old) before renaming the new one into place; killed in
    between, the folder is absent, and resuming puts the old one back and continues from it."""
    _checkpointed(tiny_lm, data, tmp_path)
    (tmp_path / "latest").rename(tmp_path / ".latest.old")
    assert _resume(tiny_lm, data, tmp_path).resumed_from == 1
    assert has_checkpoint(tmp_path) and not (tmp_path / ".latest.old").exists()


@pytest.mark.parametrize(
    "override, words",
    [
        ({"lr": float("nan")}, "finite"),
        ({"lr": float("inf")}, "finite"),
        ({"steps": 0}, "positive"),
        ({"max_grad_norm": 0.0}, "positive"),
        ({"checkpoint_every": -1}, "zero or more"),
        ({"dropout": 1.0}, "[0, 1)"),
    ],
)
def test_a_training_setting_no_run_can_use_is_refused(override, words):
    from obliviate.engine.trainer import check_train_config
    from obliviate.errors import UserError

    check_train_config(TrainConfig())
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace(")", r"\)")):
        check_train_config(TrainConfig(**override))


_TRAIN_IN_A_PROCESS = """
import json, sys
import torch
from obliviate.engine import TrainConfig, train
from obliviate.methods import get_method
from obliviate.models.loading import load_model

torch.set_num_threads(1)
model_dir, data, cfg, ckpt = sys.argv[1:]
lm = load_model(model_dir)
cfg, data = TrainConfig(**json.loads(open(cfg).read())), json.loads(open(data).read())
train(lm.model, lm.tokenizer, get_method("npo"), data, cfg, progress=False, checkpoint_dir=ckpt)
"""


@pytest.mark.parametrize("seed", [0])
def test_a_run_killed_at_a_random_point_resumes_to_the_weights_of_an_uninterrupted_run(
    seed, tiny_model_dir, data, tmp_path
):
    """kill -9 of a training process at a random moment after its first checkpoint (perhaps while it
    writes the next one), then resume in this process: the checkpoint is whole or absent, never
    half-written, and the final weights equal those of a run that was never interrupted."""
    import dataclasses
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from obliviate.models.loading import load_model

    cfg = _cfg(steps=12, checkpoint_every=1, dropout=0.1)
    lm = load_model(str(tiny_model_dir))
    train(lm.model, lm.tokenizer, get_method("npo"), data, cfg, progress=False)
    straight = _state(lm.model)

    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "cfg.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    ckpt = tmp_path / "ckpt"
    args = [str(tiny_model_dir), str(tmp_path / "data.json"), str(tmp_path / "cfg.json"), str(ckpt)]
    process = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_IN_A_PROCESS, *args], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        while not has_checkpoint(ckpt) and process.poll() is None:
            time.sleep(0.01)
        time.sleep(random.Random(seed).uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    # Whole or absent, never half-written: the last complete checkpoint is in place, or set aside by a kill
    # between atomic_dir's two renames (resume puts it back).
    assert has_checkpoint(ckpt) or (ckpt / ".latest.old" / "state.json").is_file()

    lm = load_model(str(tiny_model_dir))
    result = train(
        lm.model, lm.tokenizer, get_method("npo"), data, cfg, progress=False, checkpoint_dir=ckpt, resume=True
    )
    assert result.resumed_from >= 1 and result.steps_done == cfg.steps
    resumed = _state(lm.model)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def _fills_the_disk(write, error):
    """A fault-injecting writer: the first call writes; the second writes part of its file and raises `error`."""
    calls = []

    def writer(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            return write(obj, path, *args, **kwargs)
        open(path, "wb").write(b"PK partial")
        raise error

    return writer


@pytest.mark.parametrize(
    "writer, error",
    [
        ("torch.save", RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")),
        ("save_file", None),
        ("save_file", OSError(28, "No space left on device")),
    ],
    ids=["torch", "safetensors", "os-error"],
)
def test_a_full_disk_while_checkpointing_is_one_sentence_and_keeps_the_last_checkpoint(
    writer, error, tiny_lm, data, tmp_path, monkeypatch
):
    """The second checkpoint's write fails as a full disk would (torch reports it as a RuntimeError, safetensors
    as its own error): one sentence, the first checkpoint whole, and no temporary left."""
    from safetensors import SafetensorError

    import obliviate.engine.trainer as trainer
    from obliviate.errors import UserError

    if writer == "torch.save":
        monkeypatch.setattr(torch, "save", _fills_the_disk(torch.save, error))
    else:
        error = error or SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(trainer, "save_file", _fills_the_disk(trainer.save_file, error))
    with pytest.raises(UserError, match="Could not write the checkpoint .* free some disk space"):
        train(
            tiny_lm.model,
            tiny_lm.tokenizer,
            get_method("ga"),
            data,
            _cfg(steps=3, checkpoint_every=1),
            progress=False,
            checkpoint_dir=tmp_path,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
    assert json.loads((tmp_path / "latest" / "state.json").read_text())["step"] == 1


def test_a_stop_request_checkpoints_and_resume_finishes_the_run(tiny_model_dir, data, tmp_path):
    """stop() says yes after step 2 of 4 (checkpoint_every 0: no scheduled checkpoint): Stopped is raised with a
    checkpoint at step 2, on_step saw steps 1 and 2 of 4, and resuming ends on the uninterrupted run's weights."""
    from obliviate.errors import Stopped
    from obliviate.models.loading import load_model

    cfg = _cfg(steps=4, checkpoint_every=0)
    lm = load_model(str(tiny_model_dir))
    train(lm.model, lm.tokenizer, get_method("ga"), data, cfg, progress=False)
    straight = _state(lm.model)

    rows = []
    lm = load_model(str(tiny_model_dir))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Stopped, match="step 2 of 4"):
        train(
            lm.model,
            lm.tokenizer,
            get_method("ga"),
            data,
            cfg,
            progress=False,
            checkpoint_dir=ckpt,
            on_step=rows.append,
            stop=lambda: len(rows) == 2,
        )
    assert [(r["step"], r["steps"]) for r in rows] == [(1, 4), (2, 4)] and "loss" in rows[0]
    lm = load_model(str(tiny_model_dir))
    result = train(
        lm.model, lm.tokenizer, get_method("ga"), data, cfg, progress=False, checkpoint_dir=ckpt, resume=True
    )
    assert result.resumed_from == 2 and result.steps_done == 4
    resumed = _state(lm.model)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_default_run_checkpoints_once_halfway(tiny_lm, data, tmp_path):
    cfg = _cfg(steps=4)
    assert cfg.checkpoint_every is None
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, cfg, progress=False, checkpoint_dir=tmp_path)
    assert json.loads((tmp_path / "latest" / "state.json").read_text())["step"] == 2


def test_sharded_weights_are_gathered_for_the_save(tiny_lm, data, monkeypatch):
    """Under FSDP or ZeRO-3 teardown gathers the full state dict (every process takes part) for the main
    process to save; here the gather is the plain state dict of the one process."""
    from obliviate.engine import trainer

    monkeypatch.setattr(trainer, "sharded_weights", lambda accelerator: True)
    result = train(tiny_lm.model, tiny_lm.tokenizer, GradientAscent(), data, _cfg(steps=2), progress=False)
    assert result.full_state is not None and "full_state" not in result.to_dict()
    assert set(result.full_state) >= {n for n, _ in result.model.named_parameters()}
    for name, p in result.model.named_parameters():
        assert_close(result.full_state[name].float(), p.detach().float())
    unsharded = train(
        tiny_lm.model, tiny_lm.tokenizer, GradientAscent(), data, _cfg(steps=1), progress=False, alone=True
    )
    assert unsharded.full_state is None


def test_a_lora_merge_into_sharded_weights_is_refused(tiny_lm, data, monkeypatch):
    from obliviate.engine import trainer
    from obliviate.errors import UserError

    monkeypatch.setattr(trainer, "sharded_weights", lambda accelerator: True)
    with pytest.raises(UserError, match="--keep-adapter"):
        train(tiny_lm.model, tiny_lm.tokenizer, GradientAscent(), data, _cfg(steps=1, lora=True), progress=False)


def test_sharded_weights_means_fsdp_or_zero3():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from obliviate.engine.trainer import sharded_weights

    def acc(kind, stage=None):
        plugin = SimpleNamespace(zero_stage=stage) if stage else None
        return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin))

    assert sharded_weights(acc(DistributedType.FSDP))
    assert sharded_weights(acc(DistributedType.DEEPSPEED, 3))
    assert not sharded_weights(acc(DistributedType.DEEPSPEED, 2))
    assert not sharded_weights(acc(DistributedType.MULTI_GPU))
    assert not sharded_weights(acc(DistributedType.NO))
