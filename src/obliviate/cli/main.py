"""The `obliviate` command line. Each subcommand is a thin wrapper over a Python API function."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from obliviate.errors import UserError


def make_parser() -> argparse.ArgumentParser:
    from obliviate.data.builder import ALT_KINDS
    from obliviate.methods import METHODS

    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a pretrained language model forget something, and prove it.",
    )
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
    d.add_argument("--alt", default=None, help=f"comma-separated alternative-answer kinds (default: all of {','.join(ALT_KINDS)})")
    d.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling (default: 0)")
    d.add_argument("--overwrite", action="store_true", help="replace data that already exists in --out")
    d.add_argument("--quiet", action="store_true", help="print nothing but errors")
    d.set_defaults(func=cmd_data)

    r = sub.add_parser("run", help="unlearn with one method on an existing data directory, then evaluate",
                       description="Run one method on a data directory built by `obliviate data`: unlearn, "
                       "evaluate before and after on its held-out probes, write the model and a report.")
    r.add_argument("--data", required=True, help="a data directory written by `obliviate data` (or a run's data/)")
    r.add_argument("--model", default=None, help="the model the data was built from (default: the embedded model)")
    r.add_argument("--out", required=True, help="run directory")
    _unlearn_args(r, METHODS)
    r.set_defaults(func=cmd_forget, target=None)

    m = sub.add_parser("methods", help="list the unlearning methods with their help, source and settings",
                       description="List every registered unlearning method: what it does, where it comes from, "
                       "which data it reads and its settings with their defaults.")
    m.set_defaults(func=cmd_methods)
    return parser


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
        settings = [f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name
                    for f in dataclasses.fields(cls.config_class)]
        data = ", ".join(cls.batches) + (" + base model" if cls.needs_ref_model else "")
        table.add_row(name, cls.help, data, "\n".join(settings) or "-", cls.source)
    Console().print(table)
    return 0


def _unlearn_args(p: argparse.ArgumentParser, methods) -> None:
    p.add_argument("--method", default="npo", choices=sorted(methods), help="unlearning method (default: npo; see `obliviate methods`)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the method's tuned default)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's tuned default)")
    p.add_argument("--seed", type=int, default=None, help="seed for data generation and training (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a run that already exists in --out")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last finished stage")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (the report is still written)")


def _target_args(p: argparse.ArgumentParser) -> None:
    from obliviate.data.targets import builtin_targets

    p.add_argument("target", help=f'what to forget: a topic ("The Beatles"), a built-in target ({", ".join(builtin_targets())}) '
                   "or a YAML target spec file")
    p.add_argument("--model", default=None, help="hub id, local directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--keywords", default=None, help="comma-separated extra terms that reveal the target (names, places, titles)")
    p.add_argument("--aliases", default=None, help="comma-separated other names of the target")
    p.add_argument("--docs", nargs="+", default=None, metavar="FILE", help="documents to forget (.txt, .md, or .jsonl with a 'text' field)")
    p.add_argument("--qa", default=None, metavar="FILE", help="jsonl of {\"question\", \"answer\"} pairs about the target")
    p.add_argument("--keep", default=None, help="comma-separated close topics that must be kept")


def _csv(value: str | None) -> list[str] | None:
    return [k.strip() for k in value.split(",") if k.strip()] if value else None


def _spec(args):
    from obliviate.data.targets import resolve_target

    return resolve_target(args.target, _csv(args.keywords), aliases=_csv(args.aliases), documents=args.docs,
                          qa=args.qa, keep=_csv(args.keep))


def cmd_data(args) -> int:
    from rich.console import Console

    from obliviate.data.builder import DataConfig
    from obliviate.pipeline import build_data_dir

    console = Console(quiet=args.quiet)
    cfg = DataConfig(seed=args.seed, **({"alt_kinds": tuple(_csv(args.alt))} if args.alt else {}))
    manifest = build_data_dir(_spec(args), args.out, model=args.model, config=cfg, overwrite=args.overwrite,
                              log=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    c = manifest["counts"]
    console.print(
        f"{c['forget.jsonl']} forget records, {c['alt.jsonl']} alternative answers, {c['retain.jsonl']} retain records; "
        f"probes: {c['probes.target_known']} known of {c['probes.target']} target, {c['probes.neighbour']} neighbour, "
        f"{c['probes.general']} general. Written to [bold]{args.out}[/bold]"
    )
    return 0


def _positive(name: str, value):
    if value is not None and value <= 0:
        raise UserError(f"--{name} must be positive, got {value}.")


def cmd_forget(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from obliviate.pipeline import forget
    from obliviate.report.markdown import answer_rows, metric_rows

    _positive("steps", args.steps)
    _positive("lr", args.lr)
    console = Console(stderr=False, quiet=args.quiet)
    metrics = forget(
        _spec(args) if args.target is not None else None, data=getattr(args, "data", None), model=args.model, method=args.method, out=args.out, overwrite=args.overwrite,
        resume=args.resume, steps=args.steps, lr=args.lr, seed=args.seed, progress=not args.quiet,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]"),
    )
    base_items = [{"kind": it["kind"], "question": it["question"], "answer": it["base_answer"], "hit": it["base_hit"], "known": it["known"]} for it in metrics["items"]]
    answers = Table(title=f"Known held-out probes about {metrics['target']}: before and after", show_lines=True)
    for col in ("question", "before", "after"):
        answers.add_column(col, overflow="fold", max_width=48 if col != "question" else 32)
    for r in answer_rows(base_items, metrics["items"])[:12]:
        answers.add_row(r["question"], _short(r["before"]), _short(r["after"]))
    console.print(answers)
    table = Table(title="Held-out evaluation")
    for col in ("metric", "before", "after", "better"):
        table.add_column(col)
    for row in metric_rows(metrics["base"], metrics["unlearned"]):
        table.add_row(*row)
    console.print(table)
    console.print(f"Model, data, metrics.json and report.md written to [bold]{metrics['run_dir']}[/bold]")
    return 0


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except UserError as e:
        print(f"obliviate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obliviate: interrupted; finished stages are kept and nothing half-written was left. "
              "Rerun with --resume to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
