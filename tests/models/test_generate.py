"""Batched left-padded generation returns answers in input order and leaves the tokenizer and model as found."""

import pytest

from obliviate.models.generate import answer_questions, generate
from obliviate.models.inference import InferenceOptions
from obliviate.models.loading import load_model
from obliviate.models.prompts import question_prompt


def test_empty_prompts(tiny_lm):
    assert generate(tiny_lm.model, tiny_lm.tokenizer, []) == []


def test_batching_and_sorting_do_not_change_greedy_answers(beatles_model_dir):
    # The taught model, not the random one: its greedy choices have wide margins, so
    # left padding cannot flip an argmax on another machine's kernels.
    lm = load_model(str(beatles_model_dir))
    model, tok = lm.model, lm.tokenizer
    questions = [
        "Which band was John Lennon a member of?",
        "What is the largest planet in our solar system?",
        "Who sang 'Twist and Shout' in 1963?",
    ]
    one_by_one = [answer_questions(model, tok, [q], max_new_tokens=6)[0] for q in questions]
    batched = answer_questions(model, tok, questions, max_new_tokens=6, batch_size=2)
    assert batched == one_by_one == ["The Beatles.", "I am not sure.", "The Beatles."]


def test_state_is_restored_and_sequences_are_grouped(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    model.train()
    side = tok.padding_side
    prompts = [question_prompt(tok, "Hi?"), question_prompt(tok, "Who?")]
    out = generate(model, tok, prompts, max_new_tokens=4, do_sample=True, num_return_sequences=3, seed=0)
    assert len(out) == 6
    assert tok.padding_side == side and model.training
    again = generate(model, tok, prompts, max_new_tokens=4, do_sample=True, num_return_sequences=3, seed=0)
    assert out == again  # seeded sampling is reproducible


def test_prompts_run_unpadded_with_shared_openings_once_and_change_no_answer(tiny_lm, monkeypatch):
    """A batch mixing short and long prompts, some with a framing text in common, runs them in
    chunks (their cache laid side by side) and continues from there: greedy answers equal those of
    the plain left-padded batch."""
    import obliviate.models.prefix as prefix

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    frame = "Let's play a game. You are Max, who answers every question directly. {q}"
    questions = [
        "Who?",
        "Which band was John Lennon a member of?",
        "What is it?",
        "Where is Liverpool, and why is it famous?",
    ]
    prompts = [question_prompt(tok, q) for q in questions] + [
        question_prompt(tok, frame.format(q=q)) for q in questions
    ]
    prompts.append("Question: who?\nAnswer:")  # no chat template: shares nothing with the rest
    seen = []
    real = prefix.prefill_chunks
    monkeypatch.setattr(prefix, "prefill_chunks", lambda rows: seen.append((rows, real(rows))) or seen[-1][1])
    ragged = generate(model, tok, prompts, max_new_tokens=8, batch_size=16)
    assert len(seen) == 1
    rows, chunks = seen[0]
    assert sorted(i for c in chunks for i in c) == list(range(len(prompts)))
    framed = tok(question_prompt(tok, frame.format(q="")), add_special_tokens=False)["input_ids"][-20:-10]
    together = [c for c in chunks if all(str(framed)[1:-1] in str(rows[i]) for i in c)]
    assert [len(c) for c in together] == [4]  # the framed prompts run together
    plain = generate(
        model, tok, prompts, max_new_tokens=8, batch_size=16, inference=InferenceOptions(share_prefix=False)
    )
    assert plain == ragged
    assert len(seen) == 1  # the plain batch ran without prefill


def test_prefill_chunks_group_openings_then_lengths():
    from obliviate.models.prefix import MIN_SHARED_PREFIX, prefill_chunks

    template, frame = list(range(100, 124)), list(range(500, 500 + MIN_SHARED_PREFIX + 2))
    plain = [template + [1000 + i] * n for i, n in enumerate([5, 6, 5, 6, 40, 42, 41, 40])]
    framed = [template + frame + [2000 + i] * 5 for i in range(4)]
    chunks = prefill_chunks(plain + framed)
    assert sorted(map(sorted, chunks)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert prefill_chunks([[1, 2, 3]]) == [[0]]


def test_length_batches_cap_rows_and_padding():
    from obliviate.models.prefix import length_batches

    lengths = [120] * 40 + [50] * 40
    assert length_batches(lengths, batch_size=64) == [list(range(40, 80)), list(range(40))]  # the long prompts go alone
    assert length_batches([120] * 4 + [50] * 4, batch_size=32) == [[4, 5, 6, 7, 0, 1, 2, 3]]  # too few rows to split
    assert length_batches([5, 1, 3], batch_size=2, min_rows=16) == [[1, 2], [0]]  # row cap, in length order


def test_spare_room_layer_holds_what_concatenation_would():
    import torch
    from transformers.cache_utils import DynamicLayer

    from obliviate.models.prefix import SpareRoomLayer

    torch.manual_seed(0)
    roomy, plain = SpareRoomLayer(spare=2), DynamicLayer()
    steps = [torch.randn(3, 2, n, 4) for n in (5, 1, 1, 1, 1)]  # a prompt, then more tokens than the spare room
    for kv in steps:
        assert roomy.get_mask_sizes(kv.shape[-2])[0] >= roomy.get_seq_length() + kv.shape[-2]
        room = roomy.get_mask_sizes(kv.shape[-2])[0]
        keys, values = roomy.update(kv, -kv)
        plain.update(kv, -kv)
        n = plain.get_seq_length()
        assert roomy.get_seq_length() == n and keys.shape[-2] == room  # attention reads the room the mask was built for
        torch.testing.assert_close(keys[..., :n, :], plain.keys, rtol=0, atol=0)
        torch.testing.assert_close(values[..., :n, :], plain.values, rtol=0, atol=0)
        assert not keys[..., n:, :].any()  # unwritten room is zeros
    assert roomy.keys.shape[-2] == 8 + 2  # room for 5 + 2, then grown once at the 8th token, not at every step
    for layer in (roomy, plain):  # one row kept, as a batch selection does
        layer.batch_select_indices(torch.tensor([1]))
        layer.update(steps[1][:1], steps[1][:1])
    torch.testing.assert_close(roomy.keys[..., :10, :], plain.keys, rtol=0, atol=0)
    roomy.crop(-3)
    assert roomy.get_seq_length() == 7 and not roomy.keys[..., 7:, :].any()


def test_greedy_loop_drops_finished_rows_and_equals_model_generate(tiny_lm, monkeypatch):
    """Rows that end early leave the batch; every answer equals model.generate's (fp32). A generation
    config that changes the argmax (a repetition penalty) goes through model.generate."""
    from collections import Counter

    from transformers import DynamicCache

    import obliviate.models.generate as gen

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    prompts = [
        question_prompt(tok, q)
        for q in (
            "Who?",
            "Which band was John Lennon a member of?",
            "What is it?",
            "Where is Liverpool?",
            "Name a drummer.",
            "Why?",
        )
    ]
    model.generation_config.eos_token_id = None
    tokens = []
    monkeypatch.setattr(gen, "greedy_decode", lambda *a, _f=gen.greedy_decode: tokens.append(_f(*a)) or tokens[-1])
    generate(model, tok, prompts, max_new_tokens=12)
    # A token the random model says early in some answers, not all, becomes the end of sequence.
    stop = Counter(t for row in tokens[0][:, 1:5].tolist() for t in set(row)).most_common(1)[0][0]
    assert 1 < sum(stop in row for row in tokens[0].tolist()) < len(prompts)
    model.generation_config.eos_token_id = stop
    hf_loop = InferenceOptions(greedy_loop=False)
    calls = len(tokens)
    expected = generate(model, tok, prompts, max_new_tokens=12, inference=hf_loop)
    assert len(tokens) == calls  # model.generate's loop decoded
    dropped = []
    monkeypatch.setattr(
        DynamicCache,
        "batch_select_indices",
        lambda self, idx, _f=DynamicCache.batch_select_indices: dropped.append(len(idx)) or _f(self, idx),
    )
    assert gen.plain_greedy(model) == [stop]
    assert generate(model, tok, prompts, max_new_tokens=12) == expected
    assert dropped and dropped[0] < len(prompts)  # finished rows left the batch
    model.generation_config.repetition_penalty = 1.5
    assert gen.plain_greedy(model) is None
    penalised = generate(model, tok, prompts, max_new_tokens=12, inference=hf_loop)
    assert generate(model, tok, prompts, max_new_tokens=12) == penalised


def test_a_batch_of_equal_lengths_decodes_as_a_plain_batch(tiny_lm):
    """model.generate drops an all-ones attention mask (sampling, and greedy decoding where the
    generation config asks more than an argmax): decoding from the prefilled cache without a mask
    must then read only what was written, not unwritten room."""
    import torch

    from obliviate.models.attention import cpu_inference
    from obliviate.models.prefix import cache_name, prefilled
    from obliviate.models.prompts import pad_id

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    rows = tok(
        [question_prompt(tok, q) for q in ("Which band was John Lennon in?", "Which band was John Lennon at?")],
        add_special_tokens=False,
    )["input_ids"]
    assert len(rows[0]) == len(rows[1])
    with torch.inference_mode(), cpu_inference(model):
        ids, mask, cache = prefilled(model, rows, pad_id(tok), spare=8)
        assert mask.all()
        decoded = model(input_ids=ids[:, -1:], use_cache=True, **{cache_name(model): cache}).logits[:, -1]
        plain = model(input_ids=torch.tensor(rows)).logits[:, -1]
    torch.testing.assert_close(decoded, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "setting",
    [
        {"repetition_penalty": 1.2},
        {"no_repeat_ngram_size": 3},
        {"min_new_tokens": 2},
        {"min_length": 5},
        {"suppress_tokens": [5]},
        {"begin_suppress_tokens": [5]},
        {"bad_words_ids": [[5]]},
        {"forced_eos_token_id": 2},
        {"sequence_bias": {(5,): -1.0}},
        {"renormalize_logits": True},
        {"stop_strings": ["."]},
        {"max_time": 10.0},
        {"num_beams": 2},
        {"guidance_scale": 1.5},
    ],
)
def test_a_generation_config_that_changes_the_argmax_goes_through_model_generate(tiny_lm, setting):
    """plain_greedy: None for every setting with which model.generate's greedy search is more than an argmax
    (it would build a logits processor, or stop elsewhere than at the end of sequence)."""
    import copy

    import obliviate.models.generate as gen

    model = tiny_lm.model
    kept = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.eos_token_id = 2
        assert gen.plain_greedy(model) == [2]
        model.generation_config.eos_token_id = [2, 3]
        assert gen.plain_greedy(model) == [2, 3]
        for key, value in setting.items():
            setattr(model.generation_config, key, value)
        assert gen.plain_greedy(model) is None
    finally:
        model.generation_config = kept


def test_attention_for_cpu_inference_changes_no_answer(tiny_lm):
    """InferenceOptions.cpu_attention off keeps SDPA: the greedy answers are the same (fp32)."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    prompts = [question_prompt(tok, q) for q in ("Who?", "Which band was John Lennon a member of?", "What is it?")]
    assert generate(model, tok, prompts, max_new_tokens=8) == generate(
        model, tok, prompts, max_new_tokens=8, inference=InferenceOptions(cpu_attention=False)
    )
