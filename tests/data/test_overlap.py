"""Held-out checks: shared 8-grams and ROUGE-L against training prompts."""

from rouge_score import rouge_scorer

from obliviate.data.overlap import Overlap, too_close


def test_too_close_catches_rewordings_and_keeps_different_questions():
    assert too_close("Who was the drummer of the Beatles?", "who was the drummer of the beatles")
    assert too_close(
        "Tell me about the early history of the band", "Please tell me about the early history of the band now"
    )
    assert not too_close("Who was the drummer of the Beatles?", "Which city did the Beatles come from?")


def test_shared_ngram_is_a_violation_even_in_a_long_body():
    index = Overlap(n=8)
    index.add(0, "Tell me about it.", "Long ago the band played every night at a small club in the harbour town.")
    index.add(1, "Unrelated question?", "Nothing in common here at all.")
    hit, _ = index.violations("Which band played every night at a small club in the harbour town?")
    assert hit == {0}


def test_rouge_l_threshold_matches_rouge_score():
    index = Overlap(n=8, max_rouge_l=0.8)
    index.add(0, "What is the capital of Germany?")
    index.add(1, "Which city is the capital of Spain?")
    probe = "What is the capital of France?"
    hit, best = index.violations(probe)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [
        scorer.score(p, probe)["rougeL"].fmeasure
        for p in ("What is the capital of Germany?", "Which city is the capital of Spain?")
    ]
    assert hit == {0} and expected[0] >= 0.8 > expected[1]
    assert abs(best - max(expected)) < 1e-9


def test_skipped_pairs_never_hide_the_true_maximum():
    prompts = ["a b c d e f", "x y z", "a b x y c d", "the cat sat on the mat", "q r s t"]
    index = Overlap(n=8, max_rouge_l=0.99)
    for i, p in enumerate(prompts):
        index.add(i, p)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for probe in ["a b c x y", "the cat on a mat", "z y x"]:
        _, best = index.violations(probe)
        assert abs(best - max(scorer.score(p, probe)["rougeL"].fmeasure for p in prompts)) < 1e-9
