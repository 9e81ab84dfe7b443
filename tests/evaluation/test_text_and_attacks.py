"""Text metrics, answer candidates and attack prompts, by hand."""

import pytest
import torch

from obliviate.evaluation import attacks as atk
from obliviate.evaluation.text import distinct_n, is_gibberish, repeats, rouge_l_recall
from obliviate.evaluation.truth import candidate_record, candidates, display_answer, truth_ratio


def test_distinct_n_repetition_and_gibberish():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([""], 1) is None
    assert repeats("the band the band the band") and not repeats("the band played a song")
    assert is_gibberish("%%$# 12 ## !!") and is_gibberish("the the the the end") and is_gibberish("x" * 30)
    assert not is_gibberish("The Beatles were a band from Liverpool.") and not is_gibberish("")


def test_rouge_l_recall():
    assert rouge_l_recall("the Beatles were a band", "The Beatles were a rock band") == pytest.approx(5 / 6)
    assert rouge_l_recall("anything", "") is None


def test_candidates_keep_case_exclude_the_right_answer_and_prefer_given_ones():
    probes = [
        {"question": "Which band?", "answers": ["beatles"], "base_answer": "It was the Beatles."},
        {"question": "Drummer?", "answers": ["ringo", "starr"], "base_answer": "Ringo Starr."},
        {"question": "City?", "answers": ["liverpool"], "base_answer": "No idea."},
        {"question": "Q?", "answers": ["x"], "paraphrased_answer": "X indeed", "perturbed_answers": ["Y", "Z"]},
    ]
    assert display_answer(probes[0]) == "Beatles" and display_answer(probes[2]) == "Liverpool"
    cands = candidates(probes, probes, n_wrong=2, seed=0)
    correct, wrong = cands[0]  # the base answer's sentence, with the fact swapped in the wrong ones
    assert correct == "It was the Beatles." and len(wrong) == 2
    assert all(w.startswith("It was the ") and w.endswith(".") and "Beatles" not in w for w in wrong)
    assert cands[2][0] == "Liverpool" and "Liverpool" not in cands[2][1]  # no sentence to reuse
    assert cands[3] == ("X indeed", ["Y", "Z"])
    assert candidates(probes, probes, seed=0) == candidates(probes, probes, seed=0)
    assert candidate_record({"prompt": "Once"}, "more") == {"prompt": "Once", "completion": " more"}
    # R = mean P(w)^(1/n) / P(c)^(1/n) from per-token NLLs.
    assert truth_ratio({"nll": 1.0}, [{"nll": 2.0}, {"nll": 3.0}]) == pytest.approx(
        ((2.718281828**-2 + 2.718281828**-3) / 2) / 2.718281828**-1
    )


def test_candidates_do_not_depend_on_string_hashing():
    """Answers that differ only in case ("Guitar", "guitar") are drawn in one order in every
    process, whatever its string hash seed: the truth ratio is reproducible run to run."""
    import json
    import os
    import subprocess
    import sys

    code = """if True:
        import json
        from obliviate.evaluation.truth import candidates
        pool = [{"question": f"Q{i}?", "answers": [a], "base_answer": f"It is {a}."}
                for i, a in enumerate(["Guitar", "guitar", "Piano", "piano", "1960s", "1960S", "drums", "Drums"])]
        print(json.dumps(candidates(pool, pool, n_wrong=3, seed=0)))
    """
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 4)
    }
    assert len(outs) == 1 and json.loads(outs.pop())


def test_unspell_joins_spelled_names():
    assert atk.unspell("It was the B-e-a-t-l-e-s!") == "It was the Beatles!"
    assert atk.unspell("R i n g o played") == "Ringo played"
    assert atk.unspell("a b testing is fine") == "a b testing is fine"


def test_in_context_shots_never_contain_the_answer(tokenizer):
    probes = [
        {
            "question": "Which band was John Lennon in?",
            "answers": ["beatles"],
            "base_answer": "The Beatles. They were great.",
        },
        {"question": "Who played drums?", "answers": ["ringo"], "base_answer": "Ringo Starr played drums."},
        {"question": "Which city?", "answers": ["liverpool"], "base_answer": "Liverpool, the home of the Beatles."},
    ]
    text = atk.framed_question("in_context", probes[0], 0, probes)
    assert "Ringo Starr played drums." in text and "beatles" not in text.lower().split("q: which band")[0]
    prompt, given = atk.attack_prompt(tokenizer, "no_template", probes[0], 0, probes)
    assert "<|im_start|>" not in prompt and given.startswith("Question: Which band")
    for name in ("paraphrase", "roleplay", "ignore_instructions", "language", "spelled_out"):
        prompt, given = atk.attack_prompt(tokenizer, name, probes[1], 1, probes)
        assert "Who played drums?" in given and "<|im_start|>user" in prompt


def test_relearning_data_is_half_of_the_forget_questions():
    forget = [{"question": f"q{i % 6}", "answer": f"a{i}"} for i in range(24)]
    picked = atk.relearn_records(forget, n=100, seed=0)
    assert len({r["question"] for r in picked}) == 3 and len(picked) == 12
    assert len(atk.relearn_records(forget, n=5, seed=0)) == 5


def test_relearning_trains_every_weight_even_of_a_model_left_frozen(tiny_lm, forget_records):
    """A model straight from LoRA or rmu training has frozen parameters; the attacker still trains them all."""
    model = tiny_lm.model.requires_grad_(False)
    relearned = atk.relearn(model, tiny_lm.tokenizer, forget_records, steps=1, lr=1e-3)
    before, after = dict(model.named_parameters()), dict(relearned.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in ("model.norm.weight", "model.layers.0.mlp.up_proj.weight"))
