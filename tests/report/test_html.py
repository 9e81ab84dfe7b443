"""report.html's and compare.html's pieces on hand-made documents: highlighting, the metric rows, the pages."""

from obliviate.report.html import compare_html, highlight, metric_rows
from obliviate.report.plots import attack_leaks


def test_highlight_marks_whole_words_and_escapes_the_rest():
    text = highlight("<b>The Beatles</b> & Beatlemania", ["Beatles"])
    assert str(text) == "&lt;b&gt;The <mark>Beatles</mark>&lt;/b&gt; &amp; Beatlemania"
    assert str(highlight("a < b", [])) == "a &lt; b"


def test_metric_rows_cover_every_value_the_comparison_leaves_out():
    doc = {
        "metrics": {"leak_rate": 0.1, "n_known_target_probes": 7},
        "against": {"metrics": {"leak_rate": 0.9, "n_known_target_probes": 7}},
        "comparison": [
            {"metric": "leak_rate", "group": "forget", "before": 0.9, "after": 0.1, "change": -0.8, "better": True}
        ],
        "metric_info": {"leak_rate": {"group": "forget", "help": "share that leaks"}},
    }
    rows = metric_rows(doc)
    assert [(r["metric"], r["verdict"], r["help"]) for r in rows] == [
        ("leak_rate", "better", "share that leaks"),
        ("n_known_target_probes", "", ""),
    ]
    assert rows[1]["change"] == 0


def test_attack_leaks_name_each_attack_and_leave_out_the_worst():
    leaks = attack_leaks(
        {"leak_rate": 0.5, "attack_leak_rate": 0.6, "attack_roleplay_leak_rate": 0.4, "attack_worst_leak_rate": 0.6}
    )
    assert leaks == {"none": 0.5, "any attack": 0.6, "roleplay": 0.4}


def test_compare_page_holds_the_table_and_the_scatter(read_page):
    table = {"columns": ["method", "leak rate"], "rows": [["base model", "0.900"], ["npo", "0.100"]], "passing": []}
    bar = {"leak_cut": 0.8, "general_qa_drop": 0.03, "ppl_rise": 0.1}
    runs = {"npo": {"leak_rate": 0.1, "general_qa_accuracy": 0.5}}
    page = read_page(compare_html("The <Beatles>", table, runs, {"leak_rate": 0.9, "general_qa_accuracy": 0.5}, bar))
    shown = "".join(page.text)
    assert len(page.images) == 1 and "The <Beatles>" in shown and "npo" in shown and "No method meets it" in shown


def test_the_loss_curve_of_an_auto_run_is_the_chosen_candidates(tmp_path):
    from obliviate.report.html import training_log

    (tmp_path / "auto").mkdir()
    for i in range(3):
        (tmp_path / "auto" / f"candidate-{i}.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    train = {"auto": {"candidates": [{"chosen": False}, {"chosen": True}, {"chosen": False}]}}
    assert training_log(tmp_path, train) == tmp_path / "auto" / "candidate-1.jsonl"
    assert training_log(tmp_path, {}) is None
    (tmp_path / "train_log.jsonl").write_text("")
    assert training_log(tmp_path, train) == tmp_path / "train_log.jsonl"
