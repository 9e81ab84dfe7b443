"""metrics.md and report.md: the tables read from a metrics.json document, with the shared formatters."""

import json

from obliviate.report.markdown import write_report
from obliviate.report.metrics import comparison_markdown, metrics_markdown, write_metrics

ROWS = [
    {"metric": "leak_rate", "group": "forget", "before": 0.9, "after": 0.125, "change": -0.775, "better": True},
    {
        "metric": "retain_perplexity",
        "group": "utility",
        "before": 12.5,
        "after": 14.25,
        "change": 1.75,
        "better": False,
    },
    {"metric": "attack_leak_rate", "group": "robustness", "before": None, "after": 0.5, "change": None, "better": None},
]


def test_the_comparison_table_formats_values_changes_and_verdicts():
    assert comparison_markdown(ROWS) == (
        "| metric | group | before | after | change | better? |\n"
        "|---|---|---|---|---|---|\n"
        "| leak_rate | forget | 0.900 | 0.125 | -0.775 | yes |\n"
        "| retain_perplexity | utility | 12.50 | 14.25 | +1.750 | no |\n"
        "| attack_leak_rate | robustness | n/a | 0.500 | n/a | - |\n"
    )


def test_metrics_md_shows_values_alone_or_the_comparison():
    doc = {
        "model": {"path": "m"},
        "data": {"target": "The Beatles"},
        "metrics": {"leak_rate": 0.25, "n_known_target_probes": 12, "other": None},
        "metric_info": {"leak_rate": {"group": "forget", "higher_is_better": False}},
    }
    assert metrics_markdown(doc) == (
        "# Evaluation of `m` on The Beatles\n\n"
        "| metric | group | value | better |\n|---|---|---|---|\n"
        "| leak_rate | forget | 0.250 | lower |\n| n_known_target_probes | - | 12 | - |\n| other | - | n/a | - |\n"
    )
    against = doc | {"against": {"model": {"path": "base"}}, "comparison": ROWS[:1]}
    assert metrics_markdown(against) == (
        "# Evaluation of `m` on The Beatles\n\nAgainst `base`.\n\n" + comparison_markdown(ROWS[:1]) + "\n"
    )


def test_write_metrics_writes_the_document_and_its_table(tmp_path):
    doc = {"model": {"path": "m"}, "data": {"target": "t"}, "metrics": {"leak_rate": 0.5}, "metric_info": {}}
    write_metrics(tmp_path / "eval", doc)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == doc
    assert (tmp_path / "eval" / "metrics.md").read_text() == metrics_markdown(doc)


def test_the_run_report_puts_numbers_and_answers_side_by_side(tmp_path):
    base = {"leak_rate": 0.9, "general_qa_accuracy": 0.8, "retain_perplexity": 12.5}
    after = {
        "leak_rate": 0.125,
        "general_qa_accuracy": 0.75,
        "retain_perplexity": 14.25,
        "n_known_target_probes": 8,
        "n_target_probes": 20,
        "attack_worst_leak_rate": 0.5,
    }
    probes = [
        {"kind": "target", "known": True, "question": "Which band | was it?", "answer": "The Beatles.", "hit": True},
        {"kind": "target", "known": False, "question": "Unknown?", "answer": "No.", "hit": False},
        {"kind": "general", "known": True, "question": "Capital of France?", "answer": "Paris.", "hit": True},
    ]
    after_probes = [dict(probes[0], answer="I do not know.", hit=False), probes[1], probes[2]]
    metrics = {
        "metrics": after,
        "against": {"metrics": base, "items": {"probes": probes}},
        "items": {"probes": after_probes},
        "comparison": ROWS,
        "train": {"steps_done": 30, "seconds": 61.6},
    }
    write_report(tmp_path / "report.md", {"target": "The Beatles", "model_path": "embedded", "method": "npo"}, metrics)
    text = (tmp_path / "report.md").read_text()
    assert "npo`, 30 steps in 62 s." in text
    assert (
        "Leak rate 0.900 → 0.125 on 8 known target probes (of 20); general QA 0.800 → 0.750; "
        "retain perplexity 12.50 → 14.25. Under the strongest attack the leak rate is 0.500." in text
    )
    forget = "## Forget efficacy (known held-out target probes)\n\n" + comparison_markdown(ROWS[:1])
    assert forget + "\n## Utility" in text
    assert "| Which band \\| was it? | ✔ The Beatles. | I do not know. |\n\n## Neighbour probes" in text
    assert "Unknown?" not in text  # a target probe the base did not know is not shown
    assert "## Neighbour probes (must be kept)\n\n| question | before | after |\n|---|---|---|\n\n## General" in text
    assert "| Capital of France? | ✔ Paris. | ✔ Paris. |" in text
