"""Batched left-padded generation returns answers in input order and leaves the tokenizer and model as found."""

from obliviate.models.generate import answer_questions, generate
from obliviate.models.loading import load_model
from obliviate.models.prompts import question_prompt


def test_empty_prompts(tiny_lm):
    assert generate(tiny_lm.model, tiny_lm.tokenizer, []) == []


def test_batching_and_sorting_do_not_change_greedy_answers(beatles_model_dir):
    # The taught model, not the random one: its greedy choices have wide margins, so
    # left padding cannot flip an argmax on another machine's kernels.
    lm = load_model(str(beatles_model_dir))
    model, tok = lm.model, lm.tokenizer
    questions = ["Which band was John Lennon a member of?", "What is the largest planet in our solar system?", "Who sang 'Twist and Shout' in 1963?"]
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


def test_the_shared_prompt_prefix_runs_once_and_changes_no_answer(tiny_lm, monkeypatch):
    """Chat prompts share the template's opening: it is run once and its cache repeated; greedy
    answers equal those of the plain left-padded batch."""
    import obliviate.models.generate as gen
    from obliviate.models.prefix import MIN_SHARED_PREFIX

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    prompts = [question_prompt(tok, q) for q in ("Who?", "Which band was John Lennon a member of?", "What is it?")]
    used = []
    real = gen._with_shared_prefix
    monkeypatch.setattr(gen, "_with_shared_prefix", lambda *a: used.append(real(*a)) or used[-1])
    shared = generate(model, tok, prompts, max_new_tokens=8)
    assert used and used[0] is not None and used[0]["attention_mask"][:, :MIN_SHARED_PREFIX].all()
    monkeypatch.setattr(gen, "_with_shared_prefix", lambda *a: None)
    assert generate(model, tok, prompts, max_new_tokens=8) == shared


def test_length_batches_cap_rows_and_padding():
    from obliviate.models.generate import length_batches

    lengths = [120] * 40 + [50] * 40
    assert length_batches(lengths, batch_size=64) == [list(range(40, 80)), list(range(40))]  # the long prompts go alone
    assert length_batches([120] * 4 + [50] * 4, batch_size=32) == [[4, 5, 6, 7, 0, 1, 2, 3]]  # too few rows to split
    assert length_batches([5, 1, 3], batch_size=2, min_rows=16) == [[1, 2], [0]]  # row cap, in length order
