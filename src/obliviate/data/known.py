"""How many built-in neighbour and general probes a model knows, per target, kind, domain and split.

A check for whoever edits the probe files: a probe only measures what unlearning keeps
if the base model answers it right. It answers the probes the data stage would build
(greedy, DataConfig.probe_tokens new tokens), splits them as the data stage does, and
prints the known counts:

    python -m obliviate.data.known beatles harry_potter harmful [--model PATH] [--fp32] [--misses] [--out FILE]
"""

from __future__ import annotations

import argparse
from collections import Counter

from obliviate.data.builder import DataConfig, general_rows
from obliviate.data.splits import assign_splits, probe_split
from obliviate.data.targets import resolve_target
from obliviate.io import write_jsonl
from obliviate.leak import probe_hit
from obliviate.models.generate import answer_probes, generation_copy
from obliviate.models.loading import load_model


def answer_rows(gm, tokenizer, rows: list[dict], cfg: DataConfig) -> list[dict]:
    """`rows` with ``base_answer`` and ``base_hit`` set (greedy, cfg.probe_tokens new tokens)."""
    for r, a in zip(rows, answer_probes(gm, tokenizer, rows, max_new_tokens=cfg.probe_tokens)):
        r["base_answer"], r["base_hit"] = a, probe_hit(r, a)
    return rows


def known_counts(rows: list[dict]) -> dict[str, int]:
    """Counts ``<kind>.<split>.known`` and ``.total``, and the same per ``<kind>.<domain>``
    (probe_hit on base answers)."""
    counts: Counter = Counter()
    for r in rows:
        for key in (f"{r['kind']}.{r.get('split', 'evaluation')}", f"{r['kind']}.{r.get('domain') or 'all'}"):
            counts[key + ".known"] += bool(r["base_hit"])
            counts[key + ".total"] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="built-in targets whose neighbour probes to answer")
    parser.add_argument("--model", default=None, help="model to ask (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--fp32", action="store_true", help="answer in fp32 instead of the data stage's bf16 copy")
    parser.add_argument("--misses", action="store_true", help="also print every probe the model got wrong")
    parser.add_argument("--out", default=None, help="also write every answered probe row to this jsonl file")
    args = parser.parse_args(argv)
    cfg = DataConfig()
    lm = load_model(args.model)
    gm = lm.model if args.fp32 else generation_copy(lm.model)
    general = answer_rows(gm, lm.tokenizer, general_rows(cfg), cfg)
    answered = []
    for name in args.targets:
        spec = resolve_target(name)
        neighbours = answer_rows(gm, lm.tokenizer, [p.row("neighbour") for p in spec.neighbours], cfg)
        rows = [dict(r) for r in neighbours + general]
        assign_splits(rows, cfg.val_fraction, cfg.seed)
        answered += [{"target": name, **r} for r in rows]
        counts = known_counts(rows)
        print(f"== {name}")
        for key in sorted({k.rsplit(".", 1)[0] for k in counts}):
            print(f"  {key}: {counts[key + '.known']} known of {counts[key + '.total']}")
        if args.misses:
            for r in probe_split(rows, "validation") + probe_split(rows, "evaluation"):
                if not r["base_hit"] and (r["kind"] == "neighbour" or name == args.targets[0]):
                    print(f"  miss [{r['kind']}/{r.get('domain') or '-'}] {r['question']} -> {r['base_answer']!r}")
    if args.out:
        write_jsonl(args.out, answered)


if __name__ == "__main__":
    main()
