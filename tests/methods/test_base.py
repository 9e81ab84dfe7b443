"""The method registry: lookup with suggestions, config overrides, the contract every method meets."""

import dataclasses

import pytest

from obliviate.errors import UserError
from obliviate.methods import METHODS, EditMethod, Method, get_method, register_method


def _one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.rstrip().endswith(".")


def test_the_three_methods_are_registered():
    assert {"ga", "gd", "npo", "simnpo", "kl", "yao", "relabel", "retain_ft"} <= set(METHODS)


def test_typo_suggests_the_closest_method():
    with pytest.raises(UserError) as e:
        get_method("npx")
    assert "'npo'" in str(e.value)
    assert _one_sentence(str(e.value))


def test_unknown_method_without_a_close_match_lists_the_choices():
    with pytest.raises(UserError) as e:
        get_method("zzzzzz")
    assert "did you mean" not in str(e.value)
    assert all(name in str(e.value) for name in METHODS)


def test_unknown_config_field_is_a_user_error():
    with pytest.raises(UserError) as e:
        get_method("npo", betta=0.2)
    msg = str(e.value)
    assert "'betta'" in msg and "beta" in msg and _one_sentence(msg)


def test_known_config_field_overrides_the_default():
    method = get_method("npo", beta=0.5)
    assert method.config.beta == 0.5
    assert get_method("npo").config.beta != 0.5  # no shared mutable default


def test_registering_a_name_twice_is_refused():
    before = dict(METHODS)
    with pytest.raises(ValueError):
        register_method(METHODS["ga"])
    assert METHODS == before


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_meets_the_contract(name):
    cls = METHODS[name]
    assert issubclass(cls, Method) and cls.name == name
    assert cls.help and cls.source
    assert dataclasses.is_dataclass(cls.config_class)
    if cls.trains:
        assert cls.batches and set(cls.batches) <= {
            "forget",
            "retain",
            "alt",
            "pairs",
        }  # "pairs": built by idkpo.prepare
    else:
        assert issubclass(cls, EditMethod) and cls.batches == () and cls.edit is not EditMethod.edit
    method = get_method(name)
    assert isinstance(method.config, cls.config_class)
