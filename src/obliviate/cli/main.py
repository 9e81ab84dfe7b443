"""The `obliviate` command line. Each subcommand is a thin wrapper over a Python API function."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from obliviate import malloc
from obliviate.bench import SIZES
from obliviate.errors import UserError, os_error_sentence
from obliviate.version import __version__


def make_parser() -> argparse.ArgumentParser:
    from obliviate.data.builder import ALT_KINDS
    from obliviate.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a pretrained language model forget something, and prove it.",
    )
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "forget",
        help="build data, unlearn, evaluate on held-out probes, write the model and a report",
        description="Make a model forget TARGET: builds forget/retain/probe data from the model itself, "
        "unlearns, evaluates before and after on held-out probes, and writes a run directory.",
    )
    _target_args(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<target>)")
    _unlearn_args(p, METHODS)
    p.set_defaults(func=cmd_forget)

    d = sub.add_parser(
        "data",
        help="build forget / retain / alternative-answer / held-out probe data for a target",
        description="Build the data stage alone: the model writes and answers questions about TARGET, "
        "alternative answers are made, retain text is drawn from real prose, and held-out probes are "
        "answered by the base model. Writes DIR/*.jsonl and DIR/manifest.json.",
    )
    _target_args(d)
    d.add_argument("--out", required=True, help="directory to write the data into")
    d.add_argument(
        "--alt", default=None, help=f"comma-separated alternative-answer kinds (default: all of {','.join(ALT_KINDS)})"
    )
    d.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling (default: 0)")
    d.add_argument("--overwrite", action="store_true", help="replace data that already exists in --out")
    d.add_argument("--quiet", action="store_true", help="print nothing but errors")
    d.set_defaults(func=cmd_data)

    r = sub.add_parser(
        "run",
        help="unlearn with one method on an existing data directory, then evaluate",
        description="Run one method on a data directory built by `obliviate data`: unlearn, "
        "evaluate before and after on its held-out probes, write the model and a report.",
    )
    r.add_argument("--data", required=True, help="a data directory written by `obliviate data` (or a run's data/)")
    r.add_argument("--model", default=None, help="the model the data was built from (default: the embedded model)")
    r.add_argument("--out", required=True, help="run directory")
    _unlearn_args(r, METHODS)
    r.set_defaults(func=cmd_forget, target=None)

    m = sub.add_parser(
        "methods",
        help="list the unlearning methods with their help, source and settings",
        description="List every registered unlearning method: what it does, where it comes from, "
        "which data it reads and its settings with their defaults.",
    )
    m.set_defaults(func=cmd_methods)

    c = sub.add_parser(
        "compare",
        help="run several methods on the same data and tabulate leak, utility and time",
        description="Build TARGET's data once (or use --data), run each method at its tuned defaults, "
        "and write OUT/compare.json and OUT/compare.md: held-out leak rate, neighbour and general QA "
        "accuracy, retain perplexity and wall time per method. Finished methods are reused on a rerun.",
    )
    c.add_argument(
        "target", nargs="?", default=None, help="what to forget (as for `obliviate forget`); omit with --data"
    )
    c.add_argument("--methods", default="all", help="comma-separated methods, or 'all' (default)")
    c.add_argument("--data", default=None, help="use this data directory instead of building one")
    c.add_argument("--model", default=None, help="hub id, local directory or .gguf file (default: the embedded model)")
    c.add_argument("--out", default=None, help="directory for the runs and the table (default: runs/compare-<target>)")
    _ray_arg(c)
    _unlearn_args(c, METHODS, method=False)
    c.set_defaults(func=cmd_compare)

    e = sub.add_parser(
        "eval",
        help="evaluate a model on a data directory: forget efficacy, privacy, utility, attacks",
        description="Run the whole evaluation suite on MODEL with the held-out probes and records of "
        "--data: leak rate, truth ratio, ROUGE-L, membership inference, utility, the classification "
        "view and robustness attacks. Writes OUT/metrics.json (every value, per item, with its "
        "direction) and OUT/metrics.md. With --against, the base model is evaluated the same way and "
        "both are tabulated side by side.",
    )
    e.add_argument("model", help="the model to evaluate: a run's model/ directory, hub id, local directory or .gguf")
    e.add_argument("--data", required=True, help="a data directory written by `obliviate data` (or a run's data/)")
    e.add_argument(
        "--against",
        default=None,
        metavar="BASE",
        help="the base model to compare with (e.g. the model the data was built from)",
    )
    e.add_argument(
        "--oracle", default=None, help="a model that never learned the forget set: adds PrivLeak and forget quality"
    )
    e.add_argument("--out", default=None, help="directory for metrics.json and metrics.md (default: evals/<model>)")
    _eval_args(e)
    e.add_argument("--quiet", action="store_true", help="print nothing but errors (metrics.json is still written)")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser(
        "bench",
        help="benchmark every method against an oracle on fictitious authors (TOFU-style)",
        description="Fine-tune the model on fictitious authors (the target) and on all but the forget "
        "authors (the oracle; both cached), unlearn the forget authors from the target with every "
        "method at its defaults and over a small learning-rate grid, and score each against the oracle: "
        "forget quality (KS-test p-value), model utility, PrivLeak and the held-out leak rate. Writes "
        "OUT/bench.json, OUT/leaderboard.md and OUT/forget_quality_vs_utility.png; finished runs in "
        "OUT/runs/ are reused, so an interrupted benchmark resumes.",
    )
    b.add_argument("--model", default=None, help="hub id, local directory or .gguf file (default: the embedded model)")
    b.add_argument("--out", default="runs/bench", help="directory for the runs, table and plot (default: runs/bench)")
    b.add_argument(
        "--size", choices=sorted(SIZES), default="full", help="full (the documented benchmark) or smoke (minutes)"
    )
    b.add_argument("--methods", default="all", help="comma-separated methods, or 'all' (default)")
    b.add_argument(
        "--bench-set",
        dest="bench_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a benchmark setting, e.g. --bench-set n_authors=20 (repeatable)",
    )
    b.add_argument(
        "--docs", default=None, metavar="DIR", help="also write DIR/BENCHMARKS.md and its plot from this run"
    )
    _ray_arg(b)
    b.add_argument("--overwrite", action="store_true", help="discard the finished runs in OUT and start again")
    b.add_argument("--quiet", action="store_true", help="print nothing but errors")
    b.set_defaults(func=cmd_bench)

    ch = sub.add_parser(
        "chat",
        help="talk to a model saved by obliviate (hooks of guardrail/suppress applied)",
        description="Load a model directory written by obliviate (weights, a LoRA adapter, or "
        "inference-time hooks) exactly as it was evaluated, and answer questions. Reads one question "
        "per line from standard input unless --prompt is given.",
    )
    ch.add_argument("path", help="a run's model/ directory (or any model obliviate can load)")
    ch.add_argument("--prompt", default=None, help="answer this one question and exit")
    ch.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default: 128)")
    ch.set_defaults(func=cmd_chat)

    u = sub.add_parser(
        "ui",
        help="a local web app: unlearn from the browser, watch it happen, see before and after",
        description="Serve the obliviate web app (Gradio): choose a model, a target and a method, press Unlearn, "
        "watch the run, chat with the base and unlearned models, browse and compare earlier runs. Needs the ui "
        "extra (pip install 'obliviate[ui]').",
    )
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    u.add_argument("--runs", default="runs", help="the runs directory the app writes to and browses (default: runs)")
    u.add_argument("--model", default=None, help="the model field's starting value (default: embedded)")
    u.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than this machine (anyone who reaches it can run models and write files)",
    )
    u.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    u.set_defaults(func=cmd_ui)
    sae = sub.add_parser(
        "sae",
        help="sparse-autoencoder features: train SAEs on a model's layers, list the features a target fires",
        description="Train (or reuse, from $OBLIVIATE_HOME/sae) a TopK sparse autoencoder on one layer's "
        "activations, and rank its features by how much more often they fire on a target's forget records "
        "than on its retain records. The `sae` and `sae_edit` methods switch the top ones off.",
    )
    sae_sub = sae.add_subparsers(dest="sae_command", required=True, metavar="{train,features}")
    st = sae_sub.add_parser(
        "train",
        help="train an SAE on each chosen layer (cached)",
        description="Train an SAE on each layer of --layers, on the gensim corpus plus the forget records of "
        "--data; prints variance explained, the model's loss with the SAE spliced in, and the time.",
    )
    st.add_argument("--model", default=None, help="hub id, local directory or .gguf file (default: the embedded model)")
    st.add_argument("--layers", default=None, help="comma-separated decoder layers, 0-based (default: a third in)")
    st.add_argument("--data", default=None, help="a run or data directory whose forget records join the corpus")
    _sae_args(st, skip=("layer",))
    st.set_defaults(func=cmd_sae_train)
    sf = sae_sub.add_parser(
        "features",
        help="the features that fire on a target, with the tokens where each fires most",
        description="Rank an SAE's features on a run's (or data directory's) forget records against its retain "
        "and neighbour records, and print the top ones with their strongest tokens in context.",
    )
    sf.add_argument("path", metavar="RUN_OR_DATA", help="a run directory or a data directory")
    sf.add_argument("--model", default=None, help="the model to read (default: the one the data was built from)")
    sf.add_argument("--top", type=int, default=10, help="how many features to print (default: 10)")
    sf.add_argument("--contexts", type=int, default=3, help="strongest tokens shown per feature (default: 3)")
    _sae_args(sf)
    sf.set_defaults(func=cmd_sae_features)
    return parser


def cmd_ui(args) -> int:
    try:
        from obliviate.ui.app import launch
    except ImportError as e:
        raise UserError(f"The web app needs Gradio ({e}); install it with pip install 'obliviate[ui]'.") from None
    print(f"obliviate ui: http://{args.host}:{args.port} (runs in {args.runs}); Ctrl-C stops it.", file=sys.stderr)
    launch(args.host, args.port, args.runs, model=args.model, allow_remote=args.allow_remote, share=args.share)
    return 0


def _sae_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per SAESettings field, with its help and default."""
    import dataclasses

    from obliviate.models.sae import SAESettings

    for f in dataclasses.fields(SAESettings):
        if f.name in skip:
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type), int)
        default = "" if f.default is None else f" (default: {f.default})"
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"] + default)


def _sae_settings(args):
    import dataclasses

    from obliviate.models.sae import SAESettings

    names = [f.name for f in dataclasses.fields(SAESettings) if hasattr(args, f.name)]
    return SAESettings(**{name: getattr(args, name) for name in names})


def cmd_sae_train(args) -> int:
    from obliviate.pipeline.sae import sae_train

    try:
        layers = [int(v) for v in _csv(args.layers)] if args.layers else None
    except ValueError:
        raise UserError(f"--layers takes comma-separated layer numbers like 4,10, got {args.layers!r}.") from None
    for info in sae_train(args.model, layers, args.data, _sae_settings(args), log=_stderr):
        s = info["settings"]
        print(
            f"layer {s['layer']} ({s['site']}): variance explained {info['variance_explained']:.3f}, loss "
            f"{info['loss']:.3f} -> {info['spliced_loss']:.3f} spliced in (+{info['increase']:.3f}), "
            f"{info['tokens']} tokens, trained in {info['seconds']:.0f} s; key {info['key']}"
        )
    return 0


def cmd_sae_features(args) -> int:
    from obliviate.pipeline.sae import features_text, sae_features

    if args.contexts < 0:
        raise UserError(f"--contexts must be 0 or more, got {args.contexts}.")
    info, features = sae_features(args.path, args.model, _sae_settings(args), args.top, args.contexts, log=_stderr)
    print(features_text(info, features))
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--attacks", default="all", help="attack groups to run: prompting,quantize,relearn, 'all' (default) or 'none'"
    )
    g.add_argument(
        "--eval-set",
        dest="eval_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an evaluation setting, e.g. --eval-set attack_probes=80 (repeatable; see docs/EVALUATION.md)",
    )


def _eval_config(args):
    from obliviate.evaluation.config import ATTACK_GROUPS, EvalConfig
    from obliviate.methods.base import parse_settings

    settings = parse_settings(EvalConfig, args.eval_settings, "The evaluation")
    choice = args.attacks.strip().lower()
    attacks = ATTACK_GROUPS if choice == "all" else () if choice == "none" else tuple(_csv(choice) or ())
    return EvalConfig(**{"attacks": attacks, **settings})


KEY_METRICS = (
    "leak_rate",
    "forget_truth_ratio",
    "forget_rouge_l",
    "mia_auc_loss",
    "general_qa_accuracy",
    "neighbour_qa_accuracy",
    "retain_perplexity",
    "refusal_rate",
    "gibberish_rate",
    "cls_f1",
    "attack_worst_leak_rate",
)


def _metrics_table(doc: dict, title: str, keys=KEY_METRICS):
    from rich.table import Table

    from obliviate.report.format import fmt

    table = Table(title=title)
    if "comparison" in doc:
        for col in ("metric", "before", "after", "better?"):
            table.add_column(col)
        for r in doc["comparison"]:
            if r["metric"] in keys or r["metric"].endswith("_leak_rate") and r["metric"].startswith("attack_"):
                better = {True: "yes", False: "no", None: "-"}[r["better"]]
                table.add_row(r["metric"], fmt(r["before"]), fmt(r["after"]), better)
    else:
        table.add_column("metric")
        table.add_column("value")
        for k, v in doc["metrics"].items():
            if k in keys or k.startswith("attack_") and k.endswith("_leak_rate"):
                table.add_row(k, fmt(v))
    return table


def cmd_eval(args) -> int:
    from rich.console import Console

    from obliviate.pipeline import evaluate, slug

    cfg = _eval_config(args)
    console = Console(quiet=args.quiet)
    out = args.out or f"evals/{slug(args.model)}"
    doc = evaluate(
        args.model,
        args.data,
        against=args.against,
        oracle=args.oracle,
        config=cfg,
        out=out,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
    )
    console.print(
        _metrics_table(
            doc,
            f"{doc['model']['path']} on {doc['data']['target']} "
            f"({doc['metrics']['n_known_target_probes']} known held-out probes)",
        )
    )
    console.print(f"Every metric, per item, in [bold]{out}/metrics.json[/bold]; the table in {out}/metrics.md")
    return 0


def cmd_chat(args) -> int:
    from obliviate.models.generate import answer_questions
    from obliviate.models.loading import load_model

    _positive("max-new-tokens", args.max_new_tokens)
    lm = load_model(args.path)
    questions = [args.prompt] if args.prompt is not None else None
    if questions is None:
        interactive = sys.stdin.isatty()
        if interactive:
            print("Ask a question (an empty line or Ctrl-D ends the chat).", file=sys.stderr)
        questions = _stdin_questions(interactive)
    for q in questions:
        print(answer_questions(lm.model, lm.tokenizer, [q], max_new_tokens=args.max_new_tokens)[0], flush=True)
    return 0


def _stdin_questions(interactive: bool):
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or (interactive and not line.strip()):
            return
        if line.strip():
            yield line.strip()


def cmd_bench(args) -> int:
    import shlex
    from pathlib import Path

    from rich.console import Console

    from obliviate.bench.benchmark import BenchConfig, leaderboard_markdown, run_bench, write_docs
    from obliviate.methods.base import parse_settings

    settings = {**SIZES[args.size], **parse_settings(BenchConfig, args.bench_settings, "The benchmark")}
    console = Console(quiet=args.quiet)
    methods = None if args.methods.strip() == "all" else _csv(args.methods)
    doc = run_bench(
        args.model,
        args.out,
        BenchConfig(**settings),
        methods,
        overwrite=args.overwrite,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
        ray=args.ray,
    )
    console.print(leaderboard_markdown(doc), markup=False, highlight=False)
    console.print(
        f"Leaderboard, plot and bench.json written to [bold]{args.out}[/bold] ({doc['seconds'] / 60:.1f} min)"
    )
    if args.docs:
        command = "obliviate " + " ".join(shlex.quote(a) for a in args.argv if a != "--quiet")
        page = write_docs(doc, Path(args.out), args.docs, command)
        console.print(f"Benchmark page written to [bold]{page}[/bold]")
    return 0


def _ray_arg(parser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the methods as Ray tasks, on the cluster at ADDRESS or on a Ray instance started here "
        "(one GPU or a share of the CPUs each; needs `pip install 'obliviate[ray]'`)",
    )


def cmd_compare(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from obliviate.data.targets import resolve_target
    from obliviate.pipeline import compare

    if args.target is None and args.data is None:
        raise UserError("Name a target to forget, or pass --data with a data directory built by `obliviate data`.")
    console = Console(quiet=args.quiet)
    methods = None if args.methods.strip() == "all" else _csv(args.methods)
    result = compare(
        resolve_target(args.target) if args.target is not None else None,
        methods,
        model=args.model,
        data_dir=args.data,
        train=_train_overrides(args),
        eval=_eval_config(args),
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
        ray=args.ray,
    )
    table = Table(title=f"Methods compared on {result['target']} ({result['n_known']} known held-out probes)")
    for col in result["columns"]:
        table.add_column(col)
    for row in result["rows"]:
        table.add_row(*row)
    console.print(table)
    console.print(f"Table written to [bold]{result['out']}/compare.md[/bold]")
    return 0


def cmd_methods(args) -> int:
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from obliviate.methods import METHODS

    table = Table(title="Unlearning methods", show_lines=True)
    for col in ("method", "what it does", "data", "settings (default)", "source"):
        table.add_column(col, overflow="fold")
    for name in sorted(METHODS):
        cls = METHODS[name]
        settings = [
            f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name
            for f in dataclasses.fields(cls.config_class)
        ]
        settings += [f"{k}={v!r} (engine)" for k, v in cls.train_defaults.items()]
        if cls.trains:
            data = ", ".join(cls.batches) + (" + base model" if cls.needs_ref_model else "")
        else:
            data = "target terms (edits the model once, no training)"
        table.add_row(name, cls.help, data, "\n".join(settings) or "-", cls.source)
    Console().print(table)
    return 0


def _unlearn_args(p: argparse.ArgumentParser, methods, method: bool = True) -> None:
    if method:
        p.add_argument(
            "--method",
            default="auto",
            choices=["auto", *sorted(methods)],
            help=(
                "unlearning method; 'auto' (default) trains a few candidates, compares them on the validation probes "
                "within --budget seconds and keeps the best (see `obliviate methods`)"
            ),
        )
        p.add_argument(
            "--budget",
            type=float,
            default=None,
            metavar="SECONDS",
            help="time the automatic choice may spend on candidates (default: 240; only with auto)",
        )
        p.add_argument(
            "--set",
            dest="settings",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a method setting, e.g. --set beta=0.2 (repeatable; see `obliviate methods`)",
        )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the method's tuned default)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's tuned default)")
    p.add_argument("--seed", type=int, default=None, help="seed for data generation and training (default: 0)")
    g = p.add_argument_group("training")
    g.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights (merged at save)")
    g.add_argument(
        "--keep-adapter", action="store_true", help="with --lora: save the adapter alone instead of merging it"
    )
    g.add_argument(
        "--l2", type=float, default=None, help="weight of the L2 penalty pulling weights back to the base model"
    )
    g.add_argument("--dropout", type=float, default=None, help="attention (and LoRA) dropout while training")
    g.add_argument("--batch-size", type=int, default=None, help="examples per sub-batch per step")
    g.add_argument("--grad-accum", type=int, default=None, help="micro-batches accumulated per optimizer step")
    g.add_argument(
        "--early-stop",
        type=float,
        default=None,
        metavar="NATS",
        help=("stop once the forget NLL on a validation split of the forget data has risen by NATS per token"),
    )
    g.add_argument(
        "--idk",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="WEIGHT",
        help=(
            'make forgotten answers a plain "I don\'t know" instead of an invention: adds WEIGHT (default 1) times '
            "the NLL of a declining answer to the forget questions to the method's loss"
        ),
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints for --resume (0: none; default: one, halfway)",
    )
    g.add_argument(
        "--bf16-weights",
        action="store_true",
        help=(
            "load, train and save the model in bf16: weights, gradients and optimizer moments in bf16 with "
            "stochastically rounded updates, about half the memory of mixed precision (docs/PERFORMANCE.md)"
        ),
    )
    g.add_argument(
        "--low-memory",
        action="store_true",
        help=(
            "trade speed for memory: activation (gradient) checkpointing, and freed memory returned to the system "
            "at once; with --bf16-weights the lowest peak (docs/PERFORMANCE.md)"
        ),
    )
    _eval_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a run that already exists in --out")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out from its last finished stage"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (the report is still written)")


def _target_args(p: argparse.ArgumentParser) -> None:
    from obliviate.data.targets import builtin_targets

    p.add_argument(
        "target",
        help='what to forget: a topic ("The Beatles"), a built-in target '
        f"({', '.join(builtin_targets())}) or a YAML target spec file",
    )
    p.add_argument(
        "--model",
        default=None,
        help="hub id, local directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--keywords", default=None, help="comma-separated extra terms that reveal the target (names, places, titles)"
    )
    p.add_argument("--aliases", default=None, help="comma-separated other names of the target")
    p.add_argument(
        "--docs",
        nargs="+",
        default=None,
        metavar="FILE",
        help="documents to forget (.txt, .md, or .jsonl with a 'text' field)",
    )
    p.add_argument("--qa", default=None, metavar="FILE", help='jsonl of {"question", "answer"} pairs about the target')
    p.add_argument("--keep", default=None, help="comma-separated close topics that must be kept")


def _csv(value: str | None) -> list[str] | None:
    return [k.strip() for k in value.split(",") if k.strip()] if value else None


def _spec(args):
    from obliviate.data.targets import resolve_target

    return resolve_target(
        args.target,
        _csv(args.keywords),
        aliases=_csv(args.aliases),
        documents=args.docs,
        qa=args.qa,
        keep=_csv(args.keep),
    )


def cmd_data(args) -> int:
    from rich.console import Console

    from obliviate.data.builder import DataConfig
    from obliviate.pipeline import build_data_dir

    console = Console(quiet=args.quiet)
    cfg = DataConfig(seed=args.seed, **({"alt_kinds": tuple(_csv(args.alt))} if args.alt else {}))
    manifest = build_data_dir(
        _spec(args),
        args.out,
        model=args.model,
        config=cfg,
        overwrite=args.overwrite,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
    )
    c = manifest["counts"]
    console.print(
        f"{c['forget.jsonl']} forget records, {c['alt.jsonl']} alternative answers, "
        f"{c['retain.jsonl']} retain records; "
        f"probes: {c['probes.target_known']} known of {c['probes.target']} target, {c['probes.neighbour']} neighbour, "
        f"{c['probes.general']} general. Written to [bold]{args.out}[/bold]"
    )
    return 0


def _positive(name: str, value):
    if value is not None and not 0 < value < float("inf"):
        raise UserError(f"--{name} must be a positive finite number, got {value}.")


def _train_overrides(args) -> dict:
    """TrainConfig overrides from the training flags given; the method's tuned defaults stand for the rest."""
    for name in ("steps", "lr", "batch_size", "grad_accum"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}.")
    if args.l2 is not None and not 0 <= args.l2 < float("inf"):
        raise UserError(f"--l2 must be zero or a positive finite number, got {args.l2}.")
    if args.idk is not None and not 0 <= args.idk < float("inf"):
        raise UserError(f"--idk takes a finite weight of zero or more, got {args.idk}.")
    if args.early_stop is not None and not 0 < args.early_stop < float("inf"):
        raise UserError(f"--early-stop takes a positive finite number of nats, got {args.early_stop}.")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every takes a number of steps (0: none), got {args.checkpoint_every}.")
    if args.keep_adapter and not args.lora:
        raise UserError("--keep-adapter only applies with --lora; add --lora or drop --keep-adapter.")
    flags = {
        "steps": args.steps,
        "lr": args.lr,
        "lora": args.lora or None,
        "keep_adapter": args.keep_adapter or None,
        "l2": args.l2,
        "dropout": args.dropout,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "stop_forget_nll_gain": args.early_stop,
        "checkpoint_every": args.checkpoint_every,
        "bf16_weights": args.bf16_weights or None,
        "low_memory": args.low_memory or None,
        "idk": args.idk,
    }
    return {k: v for k, v in flags.items() if v is not None}


def cmd_forget(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from obliviate.methods import METHODS
    from obliviate.methods.base import parse_settings
    from obliviate.pipeline import forget
    from obliviate.report.format import cell

    if args.method == "auto":
        if args.settings:
            raise UserError(
                "--set applies to a named method; --method auto chooses each candidate's settings. "
                "Name a method with --method to use --set."
            )
        options = None
    else:
        options = parse_settings(METHODS[args.method].config_class, args.settings, f"Method {args.method!r}")
    if args.budget is not None and args.method != "auto":
        raise UserError("--budget only applies to --method auto; drop it or use --method auto.")
    console = Console(stderr=False, quiet=args.quiet)
    metrics = forget(
        _spec(args) if args.target is not None else None,
        data_dir=getattr(args, "data", None),
        model=args.model,
        method=args.method,
        method_options=options,
        budget=args.budget,
        train=_train_overrides(args),
        eval=_eval_config(args),
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
    )
    answers = Table(title=f"Known held-out probes about {metrics['target']}: before and after", show_lines=True)
    for col in ("question", "before", "after"):
        answers.add_column(col, overflow="fold", max_width=48 if col != "question" else 32)
    pairs = [
        (b, a)
        for b, a in zip(metrics["against"]["items"]["probes"], metrics["items"]["probes"])
        if b["kind"] == "target" and b["known"] and a["answer"] is not None
    ]
    for b, a in pairs[:12]:
        answers.add_row(a["question"], cell(b["answer"], 140), cell(a["answer"], 140))
    console.print(answers)
    console.print(_metrics_table(metrics, "Held-out evaluation (all metrics in metrics.json and report.md)"))
    console.print(f"Model, data, metrics.json and report.md written to [bold]{metrics['run_dir']}[/bold]")
    return 0


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("RANK", "0")) and hasattr(args, "quiet"):
        args.quiet = True  # a training process other than the main one of a multi-process launch: the main one speaks
    _quiet_libraries()
    import torch

    keep = not torch.cuda.is_available()  # a GPU run barely touches host memory
    try:
        with malloc.policy("keep" if keep else "default"):  # freed memory stays in the process (obliviate.malloc)
            return args.func(args)
    except UserError as e:
        print(f"obliviate: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # Permissions, a full or read-only disk, a long name: the user's to fix, so a sentence, not a traceback.
        sentence = os_error_sentence(e)
        if sentence is None:
            raise
        print(f"obliviate: error: {sentence}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "obliviate: interrupted; finished stages are kept and nothing half-written was left. "
            "Rerun with --resume to continue.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
