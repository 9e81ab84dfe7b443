"""report.html and compare.html: self-contained pages (figures embedded as PNG data URIs) rendered from the Jinja2
templates in report/templates/, from the files a run or a comparison wrote."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from obliviate.io import read_json, read_jsonl, write_text
from obliviate.leak import terms_pattern
from obliviate.report import plots
from obliviate.report.format import fmt, signed
from obliviate.report.markdown import GROUPS

TEMPLATES = Path(__file__).parent / "templates"
BETTER = {True: "better", False: "worse", None: ""}
PROBE_KINDS = [
    ("target", "Known target probes (must be forgotten)"),
    ("neighbour", "Neighbour probes (must be kept)"),
    ("general", "General probes (must be kept)"),
]


def highlight(text: str | None, terms) -> Markup:
    """`text` escaped for HTML, with every whole-word occurrence of `terms` wrapped in <mark>."""
    text = text or ""
    terms = [t for t in terms if t and t.strip()]
    if not terms:
        return escape(text)
    out, last = [], 0
    for m in terms_pattern(terms).finditer(text):
        out += [escape(text[last : m.start()]), Markup("<mark>"), escape(m.group(0)), Markup("</mark>")]
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters |= {"fmt": fmt, "signed": signed, "pct": lambda v: "n/a" if v is None else f"{v:.0%}"}
    return env


def render(template: str, **context) -> str:
    """One template of report/templates/ rendered with `context` (autoescaped)."""
    return _env().get_template(template).render(**context)


def metric_rows(metrics: dict) -> list[dict]:
    """Every metric of a metrics.json document, before and after, grouped as report.md groups them: the
    `comparison` rows first, then any value the comparison leaves out (counts, unregistered extras)."""
    info = metrics.get("metric_info", {})
    rows = [{**r, "verdict": BETTER[r["better"]]} for r in metrics.get("comparison", [])]
    seen = {r["metric"] for r in rows}
    before = metrics.get("against", {}).get("metrics", {})
    for name, value in metrics["metrics"].items():
        if name not in seen:
            b = before.get(name)
            change = value - b if isinstance(value, int | float) and isinstance(b, int | float) else None
            group = info.get(name, {}).get("group", "other")
            rows.append(dict(metric=name, group=group, before=b, after=value, change=change, verdict=""))
    for r in rows:
        r["help"] = info.get(r["metric"], {}).get("help", "")
    order = {g: i for i, (g, _) in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: order.get(r["group"], len(order)))


def target_terms(run: Path) -> list[str]:
    """The target's names and keywords from the run's data manifest (none if it is missing)."""
    manifest = run / "data" / "manifest.json"
    if not manifest.is_file():
        return []
    target = read_json(manifest).get("target", {})
    return [*target.get("aliases", []), *target.get("keywords", [])]


def probe_sections(metrics: dict, terms: list[str]) -> list[dict]:
    """Every probe answer before and after, by kind, each with its question and the target terms (and the
    probe's expected answers) highlighted; unasked probes (unknown target probes) are left out."""
    before = metrics.get("against", {}).get("items", {}).get("probes", [])
    after = metrics["items"]["probes"]
    sections = []
    for kind, title in PROBE_KINDS:
        rows = []
        for bi, ai in zip(before, after):
            if bi["kind"] != kind or (kind == "target" and not bi.get("known")) or ai.get("answer") is None:
                continue
            marks = [*terms, *bi.get("answers", [])]
            rows.append(
                {
                    "question": bi["question"],
                    "before": highlight(bi["answer"], marks),
                    "after": highlight(ai["answer"], marks),
                    "hit_before": bi["hit"],
                    "hit_after": ai["hit"],
                }
            )
        if rows:
            sections.append({"title": title, "rows": rows})
    return sections


def training_log(run: Path, train: dict) -> Path | None:
    """The run's training log: train_log.jsonl, or under --method auto the chosen candidate's (auto/candidate-I.jsonl,
    I its place among the candidates tried); None when there is none (an edit method)."""
    chosen = [i for i, r in enumerate(train.get("auto", {}).get("candidates", [])) if r.get("chosen")]
    for path in [run / "train_log.jsonl", *(run / "auto" / f"candidate-{i}.jsonl" for i in chosen)]:
        if path.is_file():
            return path
    return None


def run_figures(run: Path, metrics: dict) -> list[dict]:
    """The report's figures for the run in `run`: {"title", "src" (a PNG data URI), "note"} each."""
    log_path = training_log(run, metrics.get("train", {}))
    rows = read_jsonl(log_path) if log_path is not None else []
    before = metrics.get("against", {})
    figures = [
        {"title": "Loss curves", "fig": plots.loss_figure(rows), "note": "every term logged in train_log.jsonl"},
        {
            "title": "Leak rate per attack",
            "fig": plots.attack_figure(before.get("metrics", {}), metrics["metrics"]),
            "note": "share of known target probes whose answer reveals the fact, with no attack and under each",
        },
        {
            "title": "Membership inference",
            "fig": plots.mia_figure(before.get("items", {}).get("mia", []), metrics["items"].get("mia", [])),
            "note": "loss-attack scores of the forget records and of held-out records: the further apart, the easier "
            "an attacker tells what was trained on",
        },
    ]
    return [{"title": f["title"], "note": f["note"], "src": plots.data_uri(plots.png(f.pop("fig")))} for f in figures]


def report_html(run: str | Path, config: dict, metrics: dict) -> str:
    """report.html's text for the run directory `run` (its config.yaml as `config`, its metrics.json as `metrics`)."""
    run = Path(run)
    m, b = metrics["metrics"], metrics.get("against", {}).get("metrics", {})
    return render(
        "report.html.j2",
        target=config["target"],
        model=config["model_path"],
        method=metrics.get("chosen_method") or config["method"],
        train=metrics.get("train", {}),
        headline=[
            ("leak rate", b.get("leak_rate"), m.get("leak_rate")),
            ("worst attack leak", b.get("attack_worst_leak_rate"), m.get("attack_worst_leak_rate")),
            ("general QA", b.get("general_qa_accuracy"), m.get("general_qa_accuracy")),
            ("neighbour QA", b.get("neighbour_qa_accuracy"), m.get("neighbour_qa_accuracy")),
            ("retain perplexity", b.get("retain_perplexity"), m.get("retain_perplexity")),
        ],
        metrics=metric_rows(metrics),
        figures=run_figures(run, metrics),
        probes=probe_sections(metrics, target_terms(run)),
    )


def write_report_html(run: str | Path, config: dict, metrics: dict) -> Path:
    """Write RUN/report.html (atomically); returns its path."""
    path = Path(run) / "report.html"
    write_text(path, report_html(run, config, metrics))
    return path


def leak_utility_points(runs: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """{method: (leak rate, general QA)} of the runs' metrics dicts that have both."""
    return {
        name: (m["leak_rate"], m["general_qa_accuracy"])
        for name, m in runs.items()
        if m.get("leak_rate") is not None and m.get("general_qa_accuracy") is not None
    }


def compare_html(target: str, table: dict, runs: dict[str, dict], base: dict, bar: dict) -> str:
    """compare.html's text: the comparison `table` (pipeline.compare_table's columns and rows) and the leak-vs-utility
    scatter of `runs` ({method: metrics dict}) against `base` (the base model's metrics) with `bar` drawn."""
    points, origin = leak_utility_points(runs), (base.get("leak_rate"), base.get("general_qa_accuracy"))
    # No scatter when there is nothing to place (a base model that knew no probe has no leak rate).
    scatter = None
    if points and None not in origin:
        scatter = plots.data_uri(plots.png(plots.leak_utility_figure(points, origin, bar)))
    return render(
        "compare.html.j2",
        target=target,
        columns=table["columns"],
        rows=table["rows"],
        passing=table.get("passing", []),
        bar=bar,
        scatter=scatter,
    )


def write_compare_html(out: str | Path, compare_doc: dict) -> Path:
    """Write OUT/compare.html from compare.json's document (atomically); returns its path."""
    runs = {name: r["metrics"] for name, r in compare_doc["runs"].items()}
    path = Path(out) / "compare.html"
    write_text(path, compare_html(compare_doc["target"], compare_doc, runs, compare_doc["base"], compare_doc["bar"]))
    return path
