"""Target specs: built-in lookup by name or alias, derived specs for anything else, word-boundary mentions."""

import pytest

from obliviate.data.targets import builtin_targets, general_probes, resolve_target
from obliviate.errors import UserError


@pytest.mark.parametrize("name", ["The Beatles", "beatles", "the beatles", "  BEATLES ", "Beatles", "the Fab Four"])
def test_names_and_aliases_resolve_to_the_builtin(name):
    spec = resolve_target(name)
    assert spec.builtin == "beatles"
    assert spec.name == "The Beatles"
    assert spec.probes and spec.neighbours and spec.question_seeds
    assert all(p.answers for p in spec.probes)
    assert all(a == a.lower() for p in spec.probes for a in p.answers)


def test_beatles_is_a_builtin_and_general_is_not():
    assert "beatles" in builtin_targets() and "general" not in builtin_targets()
    assert len(general_probes()) > 10


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_target_is_a_user_error(empty):
    with pytest.raises(UserError, match="empty"):
        resolve_target(empty)


def test_unknown_target_gets_its_name_as_alias():
    spec = resolve_target("Ada Lovelace")
    assert spec.builtin is None
    assert spec.name == "Ada Lovelace" and spec.aliases == ["Ada Lovelace"]
    assert "ada lovelace" in spec.keywords and "lovelace" in spec.keywords
    assert "ada" not in spec.keywords  # words of 3 letters or fewer are too ambiguous
    assert spec.probes == [] and spec.question_seeds
    assert resolve_target("Ada Lovelace", keywords=["analytical engine"]).keywords[-1] == "analytical engine"


def test_extra_keywords_join_a_builtin():
    assert "yesterday" in resolve_target("beatles", keywords=["yesterday"]).keywords


def test_mentions_uses_word_boundaries():
    spec = resolve_target("beatles")
    assert spec.mentions("I love the Beatles!")
    assert spec.mentions("John LENNON wrote it.")
    assert spec.mentions("They recorded at Abbey Road.")
    assert spec.mentions("a Beatle in 1962")
    assert not spec.mentions("Her style was Beatlesque.")
    assert not spec.mentions("A flamingo with a ringonomicon.")  # 'ringo' inside words
    assert not spec.mentions("Paris is the capital of France.")


def test_mentions_for_a_derived_target():
    spec = resolve_target("Rust")
    assert spec.mentions("I like Rust.") and spec.mentions("rust-lang")
    assert not spec.mentions("Trust me, it was frustrating.")


def test_mentions_a_target_that_ends_in_punctuation():
    assert resolve_target("C++").mentions("I write C++ every day.")
