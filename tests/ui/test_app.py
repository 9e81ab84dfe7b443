"""The page's pieces without a browser: the request built from the form, the method help from the registry, the
live views of a run, and the host check."""

import dataclasses

import pytest

from obliviate.errors import UserError
from obliviate.methods import METHODS
from obliviate.ui.app import build_app, launch, make_request, method_help, progress_html


def _form(**kw):
    values = dict(
        model="embedded",
        target="beatles",
        method="npo",
        settings="",
        steps=None,
        lr=None,
        yaml_file=None,
        docs=None,
        qa_file=None,
        name="",
    )
    return make_request(**{**values, **kw})


def test_the_form_becomes_a_request_with_typed_settings():
    request = _form(settings="beta=0.2\n", steps=12, lr=1e-4, docs=["/tmp/a.txt"], name="mine")
    assert request.model is None and request.method == "npo" and request.settings == {"beta": 0.2}
    assert request.train == {"steps": 12, "lr": 1e-4} and request.documents == ["/tmp/a.txt"]
    assert request.name == "mine"
    with pytest.raises(UserError, match="auto chooses"):
        _form(method="auto", settings="beta=0.2")
    with pytest.raises(UserError, match="positive"):
        _form(steps=-3)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_shows_its_help_and_every_setting(name):
    text = method_help(name)
    assert METHODS[name].help in text
    assert all(f"`{f.name}`" in text for f in dataclasses.fields(METHODS[name].config_class))


def test_the_progress_view_before_any_run():
    assert "No run yet" in progress_html(None)


def test_the_page_builds(tmp_path):
    assert build_app(tmp_path) is not None


def test_the_app_refuses_a_non_local_host_without_the_flag(tmp_path):
    with pytest.raises(UserError, match="--allow-remote"):
        launch("0.0.0.0", 0, tmp_path, block=False)


def test_obliviate_ui_refuses_a_non_local_host_without_the_flag(tmp_path, capsys):
    from obliviate.cli.main import main

    assert main(["ui", "--host", "0.0.0.0", "--runs", str(tmp_path)]) == 2
    assert "--allow-remote" in capsys.readouterr().err
