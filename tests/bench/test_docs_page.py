"""docs/BENCHMARKS.md is rendered from a template: the same page, byte for byte, for the same bench.json."""

from pathlib import Path

import pytest

from obliviate.bench.benchmark import write_docs

FIXTURES = Path(__file__).parent / "fixtures"


def _run(
    fq: float, mu: float, lr_scale: float = 1.0, setting: dict | None = None, privleak: float | None = -0.125
) -> dict:
    metrics = {
        "forget_quality": fq,
        "model_utility": mu,
        "held_out_leak_rate": 0.25,
        "forget_qa_accuracy": 0.5,
        "forget_truth_ratio": 0.61,
        "privleak": privleak,
        "retain_qa_accuracy": 0.75,
        "world_qa_accuracy": 0.4,
    }
    return {"metrics": metrics, "lr_scale": lr_scale, "setting": setting or {}, "unlearn_seconds": 12.3}


def bench_doc(grid=(3.0,), skipped=True, winner=True) -> dict:
    """A finished benchmark's bench.json, small: two methods, one of them an edit."""
    npo_default = _run(0.01, 0.5, 1.0, {"lr": 1e-5, "steps": 40})
    npo_best = _run(0.2 if winner else 0.01, 0.47, 3.0, {"lr": 3e-5, "steps": 40})
    edit = _run(1e-4, 0.52, privleak=None)
    return {
        "settings": {
            "model": "embedded",
            "config": {
                "n_authors": 10,
                "n_holdout": 2,
                "n_forget": 2,
                "seed": 0,
                "finetune_epochs": 6,
                "finetune_lr": 2e-4,
                "finetune_batch": 16,
                "grid": list(grid),
            },
        },
        "target": {"metrics": {**_run(1e-9, 0.52)["metrics"], "forget_qa_accuracy": 0.95}},
        "oracle": {"metrics": {**_run(1.0, 0.5)["metrics"], "forget_qa_accuracy": 0.1, "privleak": 0.0}},
        "methods": {
            "npo": {
                "default": npo_default,
                "best": npo_best,
                "grid": [npo_default, npo_best],
                "skipped": [10.0] if skipped else [],
            },
            "suppress": {"default": edit, "best": edit, "grid": [edit], "skipped": []},
        },
        "split": {"forget_qa": 12, "retain_qa": 48, "retain_eval_qa": 40, "holdout_qa": 12, "world_facts": 40},
        "seconds": 83.4,
        "cold_seconds": 1234.5,
        "finetune_seconds": [101.2, 88.9],
        "machine": "a 2-core Example CPU (bf16 without AMX, no GPU)",
        "date": "2026-12-02",
    }


@pytest.mark.parametrize(
    "name, doc", [("full", bench_doc()), ("bare", bench_doc(grid=(), skipped=False, winner=False))]
)
def test_the_page_is_the_same_for_the_same_run(name, doc, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "forget_quality_vs_utility.png").write_bytes(b"png")
    page = write_docs(doc, out, tmp_path / "docs", "obliviate bench --out runs/bench --docs docs")
    expected = (FIXTURES / f"BENCHMARKS_{name}.md").read_text(encoding="utf-8").replace("OUT_DIR", str(out))
    assert page.read_text(encoding="utf-8") == expected
    assert (tmp_path / "docs" / "images" / "bench_forget_quality_vs_utility.png").read_bytes() == b"png"
