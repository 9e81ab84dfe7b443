"""The fictitious-author generator: seeded, distinct, and every perturbed answer differs only in the fact."""

from obliviate.bench.entities import FACTS, author_qa, make_authors
from obliviate.leak import reveals


def test_authors_are_seeded_and_distinct():
    a, b = make_authors(40, seed=1), make_authors(40, seed=1)
    assert a == b and a != make_authors(40, seed=2)
    assert len({x.name for x in a}) == 40 and len({x.title for x in a}) == 40


def test_each_fact_has_a_paraphrase_and_perturbed_answers_of_the_same_kind():
    author = make_authors(3, seed=0)[0]
    qa = author_qa(author, n_perturbed=3)
    assert len(qa) == len(FACTS) and qa == author_qa(author, n_perturbed=3)
    for row in qa:
        assert author.name in row["question"] and author.name in row["answer"]
        assert reveals(row["answer"], row["answers"]) and reveals(row["paraphrased_answer"], row["answers"])
        assert row["paraphrased_answer"] != row["answer"]
        assert len(set(row["perturbed_answers"])) == 3
        for wrong in row["perturbed_answers"]:
            assert not reveals(wrong, row["answers"])
            # the paraphrase's sentence with another value
            assert wrong.split()[:3] == row["paraphrased_answer"].split()[:3] and wrong != row["paraphrased_answer"]
