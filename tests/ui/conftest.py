"""The web app's settings for tests: the small data of the pipeline tests and no attacks, so a run on the tiny
taught model takes seconds."""

import pytest


@pytest.fixture(scope="session")
def ui_settings(small_data_config):
    from obliviate.evaluation.config import EvalConfig

    return {"data": small_data_config(), "eval": EvalConfig(attacks=(), max_new_tokens=12)}
