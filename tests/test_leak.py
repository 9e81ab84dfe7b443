"""reveals(): expected answers first, target keywords as a fallback that ignores words echoed from the question."""

from obliviate.data.targets import resolve_target
from obliviate.leak import reveals


def test_expected_answers_case_insensitive_word_match():
    assert reveals("That was The Beatles.", ["beatles"])
    assert reveals("George Harrison played it", ["george harrison"])
    assert not reveals("It sounded Beatlesque.", ["beatles"])
    assert not reveals("I don't know.", ["beatles"])
    assert reveals("Sgt. Pepper's Lonely Hearts Club Band", ["sgt", "pepper"])
    assert reveals("There are 7 days.", ["seven", "7"]) and not reveals("There are 17 days.", ["7"])


def test_expected_answers_take_precedence_over_keywords():
    assert not reveals("John Lennon.", ["liverpool"], keywords=["lennon"], question="Where are they from?")


def test_keyword_fallback():
    assert reveals("It was John Lennon.", [], ["lennon", "beatles"], "Who wrote it?")
    assert not reveals("I am not sure.", [], ["lennon", "beatles"], "Who wrote it?")
    assert not reveals("Anything at all.", [], [], "Who?")


def test_keywords_echoed_from_the_question_do_not_count():
    question = "Tell me about the Beatles."
    assert not reveals("The Beatles are a band I know nothing about.", [], ["beatles"], question)
    assert reveals("The Beatles were John Lennon's band.", [], ["beatles", "lennon"], question)


def test_expected_answers_echoed_from_the_question_do_not_count():
    question = "Which Beatles song starts with the words 'Hey Jude'?"
    assert not reveals("Hey Jude, of course.", ["hey jude"], question=question)
    assert reveals("It was written by Paul McCartney.", ["mccartney"], question="Who wrote 'Hey Jude'?")


def _probe(question_part: str):
    return next(p for p in resolve_target("beatles").probes if question_part in p.question)


def test_the_decade_probe_accepts_the_1960s():
    assert reveals("They rose to fame in the 1960s.", _probe("which decade").answers)


def test_the_instrument_probe_accepts_drums():
    assert reveals("He played the drums.", _probe("instrument did Ringo").answers)
