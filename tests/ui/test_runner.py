"""The web app's work driven directly: a run in a background thread on the tiny taught model, one run at a time
per runs directory, stop and resume, bad input refused before anything is written, runs listed and compared, and
the chat with the base and unlearned models."""

import json
import time

import pytest

from obliviate.errors import UserError
from obliviate.ui.runner import Chat, Runner, RunRequest, check, compare_runs, list_runs


def _request(model_dir, **kw) -> RunRequest:
    return RunRequest(
        **{"target": "The Beatles", "model": str(model_dir), "method": "ga", "train": {"steps": 6, "lr": 1e-3}, **kw}
    )


def _wait(job, seconds: float = 240):
    job.wait(seconds)
    assert not job.running, f"the run did not end in {seconds} s"


@pytest.fixture(scope="module")
def stopped_then_resumed(beatles_model_dir, tmp_path_factory, ui_settings):
    """A run with a second start refused while it goes, stopped at its next stage, then resumed to the end."""
    runner = Runner(tmp_path_factory.mktemp("runs"), **ui_settings)
    job = runner.start(_request(beatles_model_dir))
    with pytest.raises(UserError, match="already going"):
        runner.start(_request(beatles_model_dir, name="second"))
    job.stop()
    _wait(job)
    stopped = (job.status, job.error, sorted(p.name for p in job.out.iterdir()))
    resumed = runner.resume()
    _wait(resumed)
    return runner, stopped, resumed


def test_a_stopped_run_keeps_what_it_finished_and_resumes_to_the_end(stopped_then_resumed):
    runner, (status, error, files), job = stopped_then_resumed
    assert status == "stopped" and "Resume" in error
    assert "config.yaml" in files and "metrics.json" not in files
    assert job.status == "finished", job.error
    assert job.stage == "finished" and job.step == job.steps == 6
    assert (job.out / "report.html").is_file() and job.metrics["metrics"]["leak_rate"] is not None
    assert any(line.startswith("Unlearning with ga") for line in job.lines)


def test_a_second_run_is_refused_while_one_goes_even_from_another_app(beatles_model_dir, tmp_path, ui_settings):
    """The slot is a lock file: another Runner on the same runs directory is refused too, and gets it back after."""
    first, other = Runner(tmp_path, **ui_settings), Runner(tmp_path, **ui_settings)
    job = first.start(_request(beatles_model_dir, name="one"))
    try:
        with pytest.raises(UserError, match="already going"):
            other.start(_request(beatles_model_dir, name="two"))
        assert not (tmp_path / "two").exists()
    finally:
        job.stop()
        _wait(job)
    assert job.status == "stopped"
    with pytest.raises(UserError, match="already holds a run"):
        other.start(_request(beatles_model_dir, name="one"))


def test_bad_input_is_refused_with_a_message_and_nothing_written(beatles_model_dir, tmp_path):
    bad_qa = tmp_path / "qa.jsonl"
    bad_qa.write_text('{"question": "Who?"}\nnot json\n')
    bad_yaml = tmp_path / "spec.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    runs = tmp_path / "runs"
    runner = Runner(runs)
    cases = [
        (_request(tmp_path / "no-such-model"), "does not exist"),
        (_request(beatles_model_dir, target="  "), "target is empty"),
        (_request(beatles_model_dir, qa=str(bad_qa)), "not JSON lines"),
        (_request(beatles_model_dir, target_yaml=str(bad_yaml)), "not valid YAML"),
        (_request(beatles_model_dir, settings={"no_such": 1}), "no_such"),
    ]
    for request, expected in cases:
        with pytest.raises(UserError, match=expected):
            runner.start(request)
    assert runner.job is None and not [p for p in runs.glob("*") if p.name != ".obliviate-ui.lock"]


def test_a_qa_file_needs_a_question_and_an_answer_on_every_line(tmp_path, beatles_model_dir):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Who drummed?", "answer": "Ringo."}) + "\n" + json.dumps({"q": 1}) + "\n")
    with pytest.raises(UserError, match='"question" and an "answer"'):
        check(_request(beatles_model_dir, qa=str(qa)))
    qa.write_text(json.dumps({"question": "Who drummed?", "answer": "Ringo."}) + "\n")
    spec, method = check(_request(beatles_model_dir, qa=str(qa)))
    assert spec.qa == str(qa) and method.name == "ga"


def test_runs_are_listed_compared_and_chatted_with(stopped_then_resumed):
    runner, _, job = stopped_then_resumed
    runs = list_runs(runner.runs)
    assert [(r["name"], r["finished"]) for r in runs] == [(job.out.name, True)]
    assert runs[0]["leak_before"] == job.metrics["against"]["metrics"]["leak_rate"]
    table = compare_runs(runner.runs, [job.out.name])
    assert [row[0] for row in table["rows"]] == ["base model", job.out.name]
    with pytest.raises(UserError, match="finished run"):
        compare_runs(runner.runs, ["nothing-here"])
    t = time.perf_counter()
    before, after = Chat().answer(job.out, "Which band was John Lennon in?", max_new_tokens=6)
    assert "Beatles" in before and isinstance(after, str) and time.perf_counter() - t < 30
