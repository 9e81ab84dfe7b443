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
