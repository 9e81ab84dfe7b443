"""The Gradio page of `obliviate ui`: Unlearn (model, target, method, live progress, results, chat) and Runs (browse
earlier runs, compare several). Every handler is a plain function of the page's values, calling `runner`; the page
polls the run directory once a second while a run goes."""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import gradio as gr

from obliviate.data.targets import builtin_targets
from obliviate.errors import UserError
from obliviate.methods import METHODS
from obliviate.methods.base import parse_settings
from obliviate.pipeline.run import AUTO, BAR
from obliviate.report import plots
from obliviate.report.format import fmt, signed
from obliviate.report.html import leak_utility_points, metric_rows, probe_sections, target_terms
from obliviate.ui.runner import STAGE_ORDER, Chat, Runner, RunRequest, compare_runs, list_runs, run_state

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# The metrics the live table fills in, in order: the headline of report.md.
LIVE_METRICS = (
    "leak_rate",
    "attack_worst_leak_rate",
    "general_qa_accuracy",
    "neighbour_qa_accuracy",
    "retain_perplexity",
    "mia_auc_loss",
)
TABLE_HEAD = ["metric", "before", "after", "change", "verdict"]


def method_help(method: str) -> str:
    """Markdown: what `method` does, its source, and each setting with its default and help (from the registry)."""
    if method == AUTO:
        return (
            "**auto**: trains a few candidate methods, compares them on the validation probes within the budget "
            f"and keeps the best (the bar: leak cut {BAR['leak_cut']:.0%}, general QA down at most "
            f"{BAR['general_qa_drop']}, retain perplexity up at most {BAR['ppl_rise']:.0%}). No settings."
        )
    cls = METHODS[method]
    lines = [f"**{method}**: {cls.help}", "", f"Source: {cls.source}", "", "| setting | default | what it does |"]
    lines.append("|---|---|---|")
    for f in dataclasses.fields(cls.config_class):
        default = f.default if f.default is not dataclasses.MISSING else "-"
        lines.append(f"| `{f.name}` | `{default!r}` | {f.metadata.get('help', '')} |")
    for k, v in cls.train_defaults.items():
        lines.append(f"| `{k}` (engine) | `{v!r}` | tuned training default |")
    return "\n".join(lines)


def _file_path(value) -> str | None:
    """A Gradio file value (a path string, or an object with .name) as a path."""
    if value is None:
        return None
    return value if isinstance(value, str) else getattr(value, "name", None)


def make_request(model, target, method, settings, steps, lr, yaml_file, docs, qa_file, name) -> RunRequest:
    """A RunRequest from the page's values; UserError for settings that are not KEY=VALUE of the method's fields."""
    method = method or AUTO
    lines = [ln.strip() for ln in (settings or "").splitlines() if ln.strip()]
    if lines and method == AUTO:
        raise UserError("auto chooses each candidate's settings itself; clear the settings or choose a method.")
    options = parse_settings(METHODS[method].config_class, lines, f"Method {method!r}") if lines else {}
    train = {}
    if steps:
        if int(steps) <= 0:
            raise UserError(f"Steps must be positive, got {steps}.")
        train["steps"] = int(steps)
    if lr:
        if float(lr) <= 0:
            raise UserError(f"The learning rate must be positive, got {lr}.")
        train["lr"] = float(lr)
    model = (model or "").strip()
    return RunRequest(
        target=(target or "").strip(),
        model=None if model in ("", "embedded") else model,
        method=method,
        settings=options,
        train=train,
        target_yaml=_file_path(yaml_file),
        documents=[p for p in (_file_path(d) for d in docs or []) if p],
        qa=_file_path(qa_file),
        name=(name or "").strip() or None,
    )


def message(text: str, kind: str = "info") -> str:
    """A one-line notice for the page (kind: info, error)."""
    colour = {"info": "#1f618d", "error": "#c0392b"}[kind]
    return f'<div class="obliviate-msg obliviate-{kind}" style="color:{colour}">{html.escape(text)}</div>'


def progress_html(job) -> str:
    """The live state of a job: stage, a progress bar over the stages (and the training steps), the last log line."""
    if job is None:
        return '<div id="obliviate-progress">No run yet.</div>'
    stage_i = (
        STAGE_ORDER.index(job.stage)
        if job.stage in STAGE_ORDER
        else (len(STAGE_ORDER) if job.status == "finished" else 0)
    )
    step = f", step {job.step} of {job.steps}" if job.steps else ""
    frac = stage_i + (job.step / job.steps if job.steps and job.stage == "unlearning" else 0)
    last = html.escape(job.lines[-1].splitlines()[-1]) if job.lines else ""
    if job.status == "finished":
        last = f"Report: {html.escape(str(job.out / 'report.html'))}"
    where = html.escape(job.stage) if job.running else job.status
    return (
        f'<div id="obliviate-progress" data-status="{job.status}" data-step="{job.step}">'
        f"<b>{html.escape(job.out.name)}</b>: {where}{step}<br>"
        f'<progress value="{frac:.2f}" max="{len(STAGE_ORDER)}" style="width:100%"></progress>'
        f'<div style="color:#666">{last}</div></div>'
    )


def live_table(state: dict) -> list[list[str]]:
    """The headline metrics as they fill in: before from eval_base.json, after from metrics.json."""
    before = (state["base"] or {}).get("metrics", {})
    metrics = state["metrics"]
    after = metrics["metrics"] if metrics else {}
    better = {r["metric"]: r["better"] for r in (metrics or {}).get("comparison", [])}
    rows = []
    for name in LIVE_METRICS:
        b, a = before.get(name), after.get(name)
        change = a - b if a is not None and b is not None else None
        verdict = {True: "better", False: "worse"}.get(better.get(name), "")
        rows.append([name, fmt(b), fmt(a) if metrics else "…", signed(change) if metrics else "", verdict])
    return rows


def bar_verdict(metrics: dict | None) -> str:
    """Markdown: does the run meet the bar (pipeline.BAR), with the bar's terms."""
    if not metrics:
        return ""
    from obliviate.pipeline.run import compare_table

    met = compare_table({"run": metrics})["passing"] == ["run"]
    return (
        f"**{'Meets' if met else 'Misses'} the bar**: leak cut at least {BAR['leak_cut']:.0%}, general QA down at most "
        f"{BAR['general_qa_drop']}, retain perplexity up at most {BAR['ppl_rise']:.0%}."
    )


def full_table(metrics: dict | None) -> list[list[str]]:
    """Every metric of a finished run, before and after (report.html's rows)."""
    if not metrics:
        return []
    return [
        [r["metric"], fmt(r["before"]), fmt(r["after"]), signed(r["change"]), r["verdict"]]
        for r in metric_rows(metrics)
    ]


def answers_html(run: Path, metrics: dict | None, limit: int = 12) -> str:
    """The first `limit` known target probes' answers before and after, side by side, target terms highlighted
    (report.html's rows; the page has them all)."""
    if not metrics:
        return ""
    sections = probe_sections(metrics, target_terms(run))
    rows = sections[0]["rows"][:limit] if sections and sections[0]["title"].startswith("Known target") else []
    body = "".join(
        f"<tr><td>{html.escape(r['question'])}</td><td>{r['before']}</td><td>{r['after']}</td></tr>" for r in rows
    )
    return (
        '<table id="obliviate-answers" style="width:100%;table-layout:fixed">'
        '<tr><th style="width:40%">question</th><th>before</th><th>after</th></tr>'
        f'{body}</table><p style="color:#666">Every answer is in {html.escape(str(run / "report.html"))}.</p>'
    )


def result_figures(state: dict):
    """(loss curve, leak per attack, membership inference) figures of a run's state; None where nothing is there."""
    loss = plots.loss_figure(state["train_log"]) if state["train_log"] else None
    metrics = state["metrics"]
    if not metrics:
        return loss, None, None
    attacks = plots.attack_figure(metrics["against"]["metrics"], metrics["metrics"])
    mia = plots.mia_figure(metrics["against"]["items"].get("mia", []), metrics["items"].get("mia", []))
    return loss, attacks, mia


def build_app(runs: str | Path = "runs", *, model: str | None = None, runner: Runner | None = None) -> gr.Blocks:
    """The page over `runs` (a runs directory); `model` is the model field's starting value, `runner` the Runner
    (default: `obliviate forget`'s data and evaluation settings)."""
    runner = runner or Runner(runs)
    chat = Chat()
    methods = [AUTO, *sorted(METHODS)]

    def start(*values):
        try:
            job = runner.start(make_request(*values))
        except UserError as e:
            return message(str(e), "error"), gr.Timer(active=runner.job is not None and runner.job.running), gr.skip()
        return message(f"Started {job.out.name}."), gr.Timer(active=True), None

    def stop():
        if runner.job is None or not runner.job.running:
            return message("No run is going.", "error")
        runner.job.stop()
        return message("Stopping at the next step or stage; the run stays resumable.")

    def resume():
        try:
            job = runner.resume()
        except UserError as e:
            return message(str(e), "error"), gr.Timer(active=False)
        return message(f"Resuming {job.out.name}."), gr.Timer(active=True)

    def tick():
        job = runner.job
        state = run_state(job.out) if job is not None else {"train_log": [], "base": None, "metrics": None}
        loss, attacks, mia = result_figures(state)
        done = job is None or not job.running
        note = message(job.error, "error") if job is not None and job.error else gr.skip()
        return (
            progress_html(job),
            loss,
            live_table(state),
            bar_verdict(state["metrics"]),
            attacks,
            mia,
            answers_html(job.out, state["metrics"]) if job is not None else "",
            note,
            gr.Timer(active=not done),
        )

    def ask(run_name, question):
        run = runner.job.out if not run_name and runner.job is not None else Path(runs) / (run_name or "")
        try:
            before, after = chat.answer(run, question or "")
        except UserError as e:
            return message(str(e), "error"), "", ""
        return message(f"Answers of {run.name}'s base and unlearned models."), before, after

    def refresh_runs():
        rows = list_runs(runs)
        table = [
            [
                r["name"],
                r["target"],
                r["method"],
                "yes" if r["finished"] else "no",
                fmt(r["leak_before"]),
                fmt(r["leak_after"]),
            ]
            for r in rows
        ]
        names = [r["name"] for r in rows]
        finished = [r["name"] for r in rows if r["finished"]]
        return table, gr.Dropdown(choices=names), gr.Dropdown(choices=finished)

    def open_run(name):
        if not name:
            return message("Choose a run.", "error"), [], "", None, None, None, "", gr.skip()
        state = run_state(Path(runs) / name)
        loss, attacks, mia = result_figures(state)
        note = message(
            f"{name}: "
            + (
                "finished; the chat on the Unlearn tab now asks its models."
                if state["metrics"]
                else "not finished (resume it from the command line with --resume, or start it again)."
            )
        )
        return (
            note,
            full_table(state["metrics"]),
            bar_verdict(state["metrics"]),
            loss,
            attacks,
            mia,
            answers_html(Path(runs) / name, state["metrics"]),
            name if state["metrics"] else gr.skip(),
        )

    def compare(names):
        try:
            result = compare_runs(runs, names or [])
        except UserError as e:
            return message(str(e), "error"), [], None
        base = result["base"]
        fig = plots.leak_utility_figure(
            leak_utility_points(result["metrics"]), (base["leak_rate"], base["general_qa_accuracy"]), result["bar"]
        )
        return (
            message(f"Compared {len(result['metrics'])} runs against the first one's base model."),
            result["rows"],
            fig,
        )

    with gr.Blocks(title="obliviate") as app:
        gr.Markdown(f"# obliviate\nMake a language model forget a topic, and prove it. Runs are kept in `{runs}`.")
        with gr.Tab("Unlearn"):
            with gr.Row():
                with gr.Column():
                    model_box = gr.Textbox(
                        value=model or "embedded",
                        label="Model",
                        info="embedded (SmolLM2-135M-Instruct), a local directory or .gguf, or a hub id",
                        elem_id="model",
                    )
                    target_box = gr.Dropdown(
                        choices=builtin_targets(),
                        value=None,
                        allow_custom_value=True,
                        label="Target",
                        info="a built-in target, or type any topic",
                        elem_id="target",
                    )
                    with gr.Accordion("Uploads (optional)", open=False):
                        yaml_file = gr.File(label="Target spec (YAML)", file_types=[".yaml", ".yml"], type="filepath")
                        docs = gr.File(
                            label="Documents to forget (.txt, .md, .jsonl)", file_count="multiple", type="filepath"
                        )
                        qa_file = gr.File(label='QA pairs (.jsonl of {"question", "answer"})', type="filepath")
                    name_box = gr.Textbox(
                        label="Run name",
                        info="a folder in the runs directory (default: target-method)",
                        elem_id="run-name",
                    )
                with gr.Column():
                    method_box = gr.Dropdown(choices=methods, value=AUTO, label="Method", elem_id="method")
                    settings_box = gr.Textbox(label="Method settings", lines=2, info="KEY=VALUE, one per line")
                    with gr.Row():
                        steps_box = gr.Number(
                            label="Steps", value=None, precision=0, info="blank: the method's default", elem_id="steps"
                        )
                        lr_box = gr.Number(
                            label="Learning rate", value=None, info="blank: the method's default", elem_id="lr"
                        )
                    help_md = gr.Markdown(method_help(AUTO))
            with gr.Row():
                unlearn_btn = gr.Button("Unlearn", variant="primary", elem_id="unlearn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                resume_btn = gr.Button("Resume", elem_id="resume")
            notice = gr.HTML(elem_id="notice")
            progress = gr.HTML(progress_html(None))
            with gr.Row():
                loss_plot = gr.Plot(label="Loss terms while unlearning")
                with gr.Column():
                    live = gr.Dataframe(
                        headers=TABLE_HEAD, label="Before and after", elem_id="results", interactive=False
                    )
                    verdict = gr.Markdown(elem_id="verdict")
            with gr.Row():
                attack_plot = gr.Plot(label="Leak rate per attack")
                mia_plot = gr.Plot(label="Membership inference")
            answers = gr.HTML(elem_id="answers")
            with gr.Accordion("Chat: base and unlearned side by side", open=True):
                with gr.Row():
                    question = gr.Textbox(label="Question", scale=4, elem_id="question")
                    ask_btn = gr.Button("Ask both", scale=1, elem_id="ask")
                chat_note = gr.HTML()
                with gr.Row():
                    base_answer = gr.Textbox(label="Base model", interactive=False, elem_id="base-answer")
                    after_answer = gr.Textbox(label="Unlearned model", interactive=False, elem_id="after-answer")
            timer = gr.Timer(1.0, active=False)
        with gr.Tab("Runs", elem_id="runs-tab") as runs_tab:
            runs_table = gr.Dataframe(
                headers=["run", "target", "method", "finished", "leak before", "leak after"],
                interactive=False,
                elem_id="runs-table",
            )
            with gr.Row():
                run_pick = gr.Dropdown(label="Open a run", choices=[], elem_id="run-pick")
                open_btn = gr.Button("Open", elem_id="open")
            open_note = gr.HTML()
            run_verdict = gr.Markdown()
            run_table = gr.Dataframe(headers=TABLE_HEAD, interactive=False, elem_id="run-table")
            with gr.Row():
                run_loss = gr.Plot(label="Loss terms")
                run_attacks = gr.Plot(label="Leak rate per attack")
                run_mia = gr.Plot(label="Membership inference")
            run_answers = gr.HTML()
            with gr.Row():
                compare_pick = gr.Dropdown(label="Compare runs", choices=[], multiselect=True, elem_id="compare-pick")
                compare_btn = gr.Button("Compare", elem_id="compare")
            compare_note = gr.HTML()
            compare_table = gr.Dataframe(interactive=False, elem_id="compare-table")
            compare_plot = gr.Plot(label="Leak against utility")
            chat_run = gr.State(None)  # the run the chat asks: the one opened here, else the current run

        inputs = [
            model_box,
            target_box,
            method_box,
            settings_box,
            steps_box,
            lr_box,
            yaml_file,
            docs,
            qa_file,
            name_box,
        ]
        method_box.change(method_help, method_box, help_md)
        unlearn_btn.click(start, inputs, [notice, timer, chat_run])
        stop_btn.click(stop, None, notice)
        resume_btn.click(resume, None, [notice, timer])
        timer.tick(tick, None, [progress, loss_plot, live, verdict, attack_plot, mia_plot, answers, notice, timer])
        ask_btn.click(ask, [chat_run, question], [chat_note, base_answer, after_answer])
        runs_tab.select(refresh_runs, None, [runs_table, run_pick, compare_pick])
        open_btn.click(
            open_run,
            run_pick,
            [open_note, run_table, run_verdict, run_loss, run_attacks, run_mia, run_answers, chat_run],
        )
        compare_btn.click(compare, compare_pick, [compare_note, compare_table, compare_plot])
    return app


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    runs: str | Path = "runs",
    *,
    model: str | None = None,
    allow_remote: bool = False,
    share: bool = False,
    runner: Runner | None = None,
    block: bool = True,
):
    """Serve the page on host:port. Raises UserError for a host other than this machine without `allow_remote`
    (the page runs models and writes files for whoever reaches it). `share` opens Gradio's public link."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise UserError(
            f"--host {host} would let other machines use this app; pass --allow-remote to mean it, or use 127.0.0.1."
        )
    app = build_app(runs, model=model, runner=runner)
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=True)
    return app
