"""Atomic directory replacement and jsonl reading with line numbers."""

import json

import pytest

from obliviate.errors import UserError
from obliviate.io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl, write_text


@pytest.fixture
def existing(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_text("old weights")
    (d / "config.json").write_text("{}")
    return d


def _snapshot(d):
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_block_leaves_the_existing_directory_untouched(existing, exc):
    before = _snapshot(existing)
    with pytest.raises(type(exc)):
        with atomic_dir(existing) as tmp:
            assert tmp != existing and tmp.parent == existing.parent
            (tmp / "weights.bin").write_text("half-written")
            raise exc
    assert _snapshot(existing) == before
    assert _leftovers(existing.parent) == []


def test_a_completed_block_replaces_the_directory(existing):
    with atomic_dir(existing) as tmp:
        (tmp / "new.bin").write_text("new weights")
        assert _snapshot(existing)["weights.bin"] == "old weights"  # not touched until the block ends
    assert _snapshot(existing) == {"new.bin": "new weights"}
    assert _leftovers(existing.parent) == []


def test_a_new_directory_appears_only_when_the_block_completes(tmp_path):
    target = tmp_path / "sub" / "data"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "a.jsonl").write_text("{}\n")
            raise KeyboardInterrupt
    assert not target.exists()
    with atomic_dir(target) as tmp:
        (tmp / "a.jsonl").write_text("{}\n")
    assert (target / "a.jsonl").read_text() == "{}\n"


def test_read_jsonl_names_the_bad_line(tmp_path):
    f = tmp_path / "forget.jsonl"
    f.write_text('{"question": "a"}\n\n{"question": "b"}\n{"question": oops}\n')
    with pytest.raises(UserError) as e:
        read_jsonl(f)
    assert "line 4" in str(e.value) and str(f) in str(e.value)


def test_read_jsonl_refuses_a_line_that_is_not_an_object(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2"):
        read_jsonl(f)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_jsonl_round_trip_skips_blank_lines(tmp_path):
    rows = [{"question": "Qui?", "answer": "Les Beatles — ça va"}, {"text": "x"}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write("\n   \n")
    assert read_jsonl(tmp_path / "r.jsonl") == rows


def test_json_round_trip_and_errors(tmp_path):
    write_json(tmp_path / "m.json", {"a": [1, 2]})
    assert read_json(tmp_path / "m.json") == {"a": [1, 2]}
    write_text(tmp_path / "bad.json", "{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(UserError):
        read_json(tmp_path / "missing.json")
    assert _leftovers(tmp_path) == []
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2]}


def test_a_second_lock_on_a_folder_is_refused_and_names_the_holder(tmp_path):
    import os

    from obliviate.errors import UserError
    from obliviate.io import LOCK_NAME, run_lock

    out = tmp_path / "runs" / "run"
    with run_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match=f"in use by another obliviate run \\(process {os.getpid()}\\)"):
            with run_lock(out):
                pass
    assert not (tmp_path / "runs").exists(), "folders the lock created and nothing filled are removed"


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys

    from obliviate.io import LOCK_NAME, run_lock

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from obliviate.io import run_lock\n"
            f"with run_lock(Path({str(out)!r})):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
    assert (out / LOCK_NAME).is_file(), "a killed process leaves its lock file"
    (out / "config.yaml").write_text("x")
    with run_lock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_written_files_and_folders_follow_the_umask(tmp_path):
    import os

    from obliviate.io import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_what_a_kill_between_the_two_renames_set_aside_is_put_back(existing):
    """atomic_dir moves the old directory to .NAME.old, then the new one into place; killed in between, NAME is
    absent and restore_replaced brings the old, complete one back. Otherwise it changes nothing."""
    from obliviate.io import restore_replaced

    before = _snapshot(existing)
    existing.rename(existing.with_name(f".{existing.name}.old"))
    assert restore_replaced(existing)
    assert _snapshot(existing) == before and _leftovers(existing.parent) == []
    assert not restore_replaced(existing) and _snapshot(existing) == before
