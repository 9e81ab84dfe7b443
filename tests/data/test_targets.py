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


def test_every_builtin_loads_with_probes_and_neighbours():
    for name in builtin_targets():
        spec = resolve_target(name)
        assert spec.builtin == name and spec.probes and spec.neighbours and spec.question_seeds
        assert spec.kind in ("knowledge", "behaviour")
        for p in spec.probes + spec.neighbours:
            assert (p.question is None) != (p.prompt is None)


def test_harry_potter_and_harmful_are_builtins():
    assert {"beatles", "harry_potter", "harmful"} <= set(builtin_targets())
    assert resolve_target("Harry Potter").builtin == "harry_potter"
    assert resolve_target("harmful").kind == "behaviour"
    assert resolve_target("harry_potter").anchors


@pytest.mark.parametrize(
    "typo, close", [("harry_poter", "harry_potter"), ("beatle", "beatles"), ("harmfull", "harmful")]
)
def test_a_mistyped_builtin_suggests_the_closest(typo, close):
    with pytest.raises(UserError, match=f"did you mean '{close}'"):
        resolve_target(typo)


def test_a_yaml_spec_file(tmp_path):
    (tmp_path / "notes.txt").write_text("Zorblax lives on Mars. Zorblax eats rocks.")
    spec_file = tmp_path / "zorblax.yaml"
    spec_file.write_text(
        "name: Zorblax\naliases: [Zorblax, the rock eater]\nkeywords: [zorblax]\n"
        "documents: [notes.txt]\nqa: qa.jsonl\nkeep: [Mars]\n"
        'probes:\n  - {question: "What does the rock eater eat?", answers: [rocks]}\n'
        "  - {prompt: Zorblax lives on, answers: [mars]}\n"
        "anchors: {Zorblax: Bob}\n"
    )
    spec = resolve_target(str(spec_file), keywords=["rocks"], keep=["Venus"])
    assert spec.name == "Zorblax" and spec.aliases == ["Zorblax", "the rock eater"]
    assert spec.keywords == ["zorblax", "rocks"] and spec.keep == ["Mars", "Venus"]
    assert spec.documents == [str(tmp_path / "notes.txt")] and spec.qa == str(tmp_path / "qa.jsonl")
    assert spec.probes[1].prompt == "Zorblax lives on" and spec.anchors == {"Zorblax": "Bob"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("- just\n- a list\n", "YAML mapping with at least a 'name'"),
        ("name: X\nkeywrds: [x]\n", "unknown key 'keywrds'; did you mean 'keywords'"),
        ("name: X\nkind: opinion\n", "kind must be one of"),
        ("name: X\nkeywords: x\n", "'keywords' must be a list"),
        ("name: X\nprobes:\n  - {answers: [x]}\n", "probe 1 needs a 'question' or a 'prompt'"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_spec_files_get_one_clear_error(tmp_path, content, message):
    f = tmp_path / "spec.yaml"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        resolve_target(str(f))


def test_missing_spec_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_target(str(tmp_path / "nope.yaml"))
