"""docs/PERFORMANCE.md from the benchmark results: every number on that page is read from them.

python benchmarks/performance_doc.py   # reads benchmarks/results/*.json, writes docs/PERFORMANCE.md

The page's text is benchmarks/templates/PERFORMANCE.md.template; this script computes the value of each of its
`$placeholders` and fills them in (`string.Template.substitute`, so a placeholder without a value raises KeyError).
"""

import json
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATE = ROOT / "benchmarks" / "templates" / "PERFORMANCE.md.template"
OUTPUT = ROOT / "docs" / "PERFORMANCE.md"

# Parameters of the embedded model, with the tied head counted once: the N of 6 N FLOPs per token.
MODEL_PARAMETERS = 134515008

ENGINE_ROWS = (
    ("ga", "`ga`"),
    ("npo", "`npo` (forget + retain; reference log-probs computed once)"),
    ("ga_lora", "`ga` + LoRA (r 16, all linear layers)"),
    ("ga_bf16_weights", "`ga`, `--bf16-weights`"),
    ("ga_fp32", "`ga`, fp32"),
)
OPTIMIZER_NAMES = {
    "adamw_fp32_per_tensor": "AdamW, fp32 weights, per-tensor loop",
    "adamw_fp32_fused": "AdamW, fp32 weights, fused (the default engine)",
    "adamw_bf16_fused_round_to_nearest": (
        "AdamW, bf16 weights, fused, round to nearest (loses updates below half a bf16 step)"
    ),
    "obliviate_bf16_adamw_stochastic": "obliviate `BF16AdamW`, bf16 weights, stochastic rounding (`--bf16-weights`)",
    "torchao_adamw_bf16_stochastic": "torchao 0.18 `_AdamW(bf16_stochastic_round=True)`",
    "bitsandbytes_adamw_8bit": "bitsandbytes 0.50 `AdamW8bit` (fp32 weights, 8-bit moments)",
}
MEMORY_NAMES = {
    "npo_full": "full fine-tuning, bf16 autocast (the default)",
    "npo_full_bf16_weights": "full fine-tuning, `--bf16-weights`",
    "npo_full_reference_copy": "full fine-tuning, bf16 autocast, with a reference copy run every step",
    "npo_lora": "LoRA, bf16 autocast",
    "npo_lora_bf16_weights": "LoRA, `--bf16-weights`",
    "npo_full_bf16_weights_low_memory": "full fine-tuning, `--bf16-weights --low-memory`",
    "npo_lora_bf16_weights_low_memory": "LoRA, `--bf16-weights --low-memory`",
}
PRECISION_ROWS = (("fp32", "fp32"), ("bf16_autocast", "bf16 autocast (default)"), ("bf16_weights", "`--bf16-weights`"))
# Placeholder prefix -> the evaluation.json row whose seconds and stages it shows.
EVALUATION_ROWS = {
    "embedded": "embedded_model",
    "unlearned": "unlearned_model",
    "one_process": "embedded_model_one_process",
    "unlearned_one_process": "unlearned_model_one_process",
    "generate_loop": "embedded_model_generate_loop",
    "no_shared_prefix": "embedded_model_no_shared_prefix",
    "sdpa": "embedded_model_sdpa_attention",
    "glibc_allocator": "embedded_model_glibc_allocator",
    "batches_of_128": "embedded_model_batches_of_128",
}
MOVED_ROWS = (
    ("in one process", "one_process"),
    ("`model.generate`'s greedy loop", "greedy_loop_off"),
    ("shared prefix and unpadded passes off", "shared_prefix_off"),
    ("SDPA attention", "cpu_attention_off"),
    ("glibc's allocator settings", "allocator_kept_off"),
    ("batches of 128 prompts", "batches_of_128"),
)


def load(name):
    return json.loads((RESULTS / name).read_text())


def f2(x):
    return f"{x:.2f}"


def pct(x):
    return f"{100 * x:.0f}%"


def gb(b):
    return f"{b / 1e9:.2f} GB"


def mb(b):
    return f"{b / 2**20:.0f}"


def step(row):
    return f2(row["seconds_per_step"])


def table(rows):
    """Markdown table rows, one a line, without a trailing newline (the template has it)."""
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def status(m, limit):
    if m["peak_over_model"] <= limit:
        return "met"
    if m["above_imports_over_model"] <= limit:
        return "met above the libraries, not in total"
    return "not met"


def trainer_status(r):
    if r["engine_ga_vs_trainer_bf16"] >= 2:
        return "met"
    if r["engine_ga_vs_trainer_fp32"] >= 2:
        return "met against its fp32 default only"
    return "not met (see below)"


def share_status(e):
    met = [n for n in ("npo", "ga_bf16_weights", "ga") if e[n]["share_of_bf16_peak"] >= 0.5]
    return ("met by " + ", ".join(f"`{n}`" for n in met)) if met else "not met"


def evaluation_status(seconds, repeats):
    if seconds > 60:
        return "not met"
    if max(repeats) <= 60:
        return "met in every run"
    return f"met in {sum(x <= 60 for x in [*repeats, seconds])} of {len(repeats) + 1} runs"


def stages(row):
    return ", ".join(f"{k} {v:.0f} s" for k, v in row["stages"].items())


def moved_row(label, m):
    return [
        label,
        f"{m['answers']} of {m['probes']}",
        str(m["hits"]),
        f"{m['leak_rate'][0]:.3f} → {m['leak_rate'][1]:.3f}",
    ]


# The run-to-run table: label, and the cell of one training_speed.json run.
def _peak_bf16(x):
    return f"{x['peak_flops']['bf16'] / 1e9:.0f}"


def _ga_step(x):
    return step(x["engine"]["ga"])


def _npo_step(x):
    return step(x["engine"]["npo"])


def _npo_share(x):
    return pct(x["engine"]["npo"]["share_of_bf16_peak"])


def _vs_naive(x):
    return f2(x["ratios"]["engine_ga_vs_naive"]) + "×"


def _vs_trainer_fp32(x):
    return f2(x["ratios"]["engine_ga_vs_trainer_fp32"]) + "×"


def _vs_trainer_bf16(x):
    return f2(x["ratios"]["engine_ga_vs_trainer_bf16"]) + "×"


def _bf16_weights_vs_trainer_bf16(x):
    return f2(x["hf_trainer_s"]["bf16"] / x["engine"]["ga_bf16_weights"]["seconds_per_step"]) + "×"


def _npo_reference_share(x):
    return pct(x["engine"]["npo"]["ref_share"])


RUN_ROWS = (
    ("bf16 matmul peak, GFLOP/s", _peak_bf16),
    ("`ga` s/step", _ga_step),
    ("`npo` s/step", _npo_step),
    ("`npo` share of the bf16 peak", _npo_share),
    ("`ga` vs the naive loop", _vs_naive),
    ("`ga` vs the `Trainer`, fp32", _vs_trainer_fp32),
    ("`ga` vs the `Trainer`, bf16", _vs_trainer_bf16),
    ("`ga` with bf16 weights vs the `Trainer`, bf16", _bf16_weights_vs_trainer_bf16),
    ("reference share of an `npo` run", _npo_reference_share),
)


def training_values(t, memory, op):
    """Placeholders read from training_speed.json, training_memory.json (or the speed run) and optimizer_step.json."""
    e, r, lv, pk, tr = t["engine"], t["ratios"], t["ratios"]["levers"], t["peak_flops"], t["hf_trainer_s"]
    ga = e["ga"]["seconds_per_step"]
    ops = op["seconds_per_step"]
    mem = memory["memory"]
    bm = mem["npo_full_bf16_weights_low_memory"]
    lm = mem["npo_lora_bf16_weights_low_memory"]
    trainer_bf16_share = 6 * MODEL_PARAMETERS * e["ga"]["tokens_per_step"] / tr["bf16"] / pk["bf16"]
    steps = {f"{k}_step": step(e[k]) for k in e}
    return {
        **steps,
        "steps": int(t["command"].split("--steps ")[1]),
        "threads": t["threads"],
        "npo_share": pct(e["npo"]["share_of_bf16_peak"]),
        "ga_bf16_weights_share": pct(e["ga_bf16_weights"]["share_of_bf16_peak"]),
        "ga_share": pct(e["ga"]["share_of_bf16_peak"]),
        "share_status": share_status(e),
        "vs_naive": f2(r["engine_ga_vs_naive"]),
        "vs_trainer_fp32": f2(r["engine_ga_vs_trainer_fp32"]),
        "vs_trainer_bf16": f2(r["engine_ga_vs_trainer_bf16"]),
        "vs_forgetium": f2(r["engine_ga_vs_forgetium"]),
        "trainer_status": trainer_status(r),
        "npo_reference_share": pct(e["npo"]["ref_share"]),
        "reference_status": "met" if e["npo"]["ref_share"] <= 0.15 else "not met",
        "npo_reference_seconds": f"{e['npo']['ref_seconds']:.1f}",
        "npo_run_seconds": f"{e['npo']['ref_seconds'] / e['npo']['ref_share']:.1f}",
        "full_low_memory_above_libraries": f2(bm["above_imports_over_model"]),
        "full_low_memory_libraries_mb": mb(bm["after_imports"]),
        "full_low_memory_total": f2(bm["peak_over_model"]),
        "full_low_memory_status": status(bm, 3),
        "lora_low_memory_above_libraries": f2(lm["above_imports_over_model"]),
        "lora_low_memory_libraries_mb": mb(lm["after_imports"]),
        "lora_low_memory_total": f2(lm["peak_over_model"]),
        "lora_low_memory_peak": gb(lm["peak"]),
        "lora_low_memory_status": status(lm, 1.5),
        "model_fp32_mb": f"{memory['model_fp32_bytes'] / 1e6:.0f}",
        "tokens_per_record": f"{e['ga']['tokens_per_step'] / 4:.1f}",
        "peak_fp32": f"{pk['fp32'] / 1e9:.0f}",
        "peak_bf16": f"{pk['bf16'] / 1e9:.0f}",
        "ga_bf16_weights_over_ga": f2(e["ga_bf16_weights"]["seconds_per_step"] / ga),
        "ga_fp32_over_ga": f2(e["ga_fp32"]["seconds_per_step"] / ga),
        "naive_step": f2(t["naive_seed_loop_s"]),
        "trainer_fp32_step": f2(tr["fp32"]),
        "trainer_bf16_step": f2(tr["bf16"]),
        "forgetium_step": f2(t["forgetium_s"]),
        "trainer_bf16_share": pct(trainer_bf16_share),
        "optimizer_bf16_stochastic": f"{ops['obliviate_bf16_adamw_stochastic']:.2f}",
        "optimizer_fp32_fused": f"{ops['adamw_fp32_fused']:.2f}",
        "lever_answer_only_head": f2(lv["answer_only_head_and_no_mask"]),
        "lever_fused_adamw": f2(lv["fused_adamw"]),
        "lever_bf16_autocast": f2(lv["bf16_autocast_vs_fp32"]),
        "lever_bf16_weights": f2(lv["bf16_weights"]),
        "lever_eager_attention": f2(lv["eager_attention_on_cpu"]),
        "lever_allocator": f2(lv["allocator_keeps_freed_memory"]),
        "lever_reference_once": f2(lv["reference_log_probs_once"]),
        "engine_rows": table(
            [
                label,
                f"{e[k]['tokens_per_step']:.0f}",
                step(e[k]),
                f"{e[k]['tokens_per_s']:.0f}",
                pct(e[k]["share_of_bf16_peak"]),
            ]
            for k, label in ENGINE_ROWS
        ),
        "optimizer_rows": table([OPTIMIZER_NAMES.get(k, k), f"{v:.3f}"] for k, v in ops.items()),
        "memory_rows": table(
            [MEMORY_NAMES[k], gb(v["peak"]), f2(v["peak_over_model"]), f2(v["above_imports_over_model"])]
            for k, v in mem.items()
        ),
    }


def runs_values(allruns):
    """Placeholders of the run-to-run table, over the earlier runs and the latest one."""
    return {
        "run_count": len(allruns),
        "runs_header": "| | " + " | ".join(f"run {i + 1}" for i in range(len(allruns))) + " |",
        "runs_rule": "|---|" + "---|" * len(allruns),
        "runs_table": table([label, *(cell(x) for x in allruns)] for label, cell in RUN_ROWS),
    }


def precision_values(pc):
    """Placeholders read from precision_curves.json."""
    runs, gap = pc["runs"], pc["max_abs_loss_gap_vs_fp32"]
    return {
        "forget_nll_gap": f"{max(abs(runs[k]['forget_nll'] - runs['fp32']['forget_nll']) for k in runs):.2f}",
        "retain_nll_gap": f"{max(abs(runs[k]['retain_nll'] - runs['fp32']['retain_nll']) for k in runs):.3f}",
        "start_forget_nll": f"{runs['fp32']['start']['forget_nll']:.3f}",
        "start_retain_nll": f"{runs['fp32']['start']['retain_nll']:.3f}",
        "first_loss": f"{runs['fp32']['loss'][0]:.0f}",
        "gap_bf16_weights": f"{gap['bf16_weights']:.2f}",
        "gap_bf16_autocast": f"{gap['bf16_autocast']:.2f}",
        "precision_rows": table(
            [
                label,
                f"{runs[k]['forget_nll']:.3f}",
                f"{runs[k]['retain_nll']:.3f}",
                f"{gap[k]:.2f}",
                str(runs[k]["seconds"]),
            ]
            for k, label in PRECISION_ROWS
        ),
    }


def evaluation_values(ev, rep):
    """Placeholders read from evaluation.json and the repeated runs' seconds (evaluation_repeat.json)."""
    mv = ev["answers_moved_against_the_embedded_model_row"]
    seconds = ev["embedded_model"]["seconds"]
    rows = {f"{name}_seconds": ev[key]["seconds"] for name, key in EVALUATION_ROWS.items()}
    rows |= {f"{name}_stages": stages(ev[key]) for name, key in EVALUATION_ROWS.items()}
    levers = ("second_process", "second_process_unlearned", "greedy_loop", "shared_prefix", "cpu_attention")
    return {
        **rows,
        **{f"evaluation_lever_{k}": f2(ev[f"lever_{k}"]) for k in levers},
        "evaluation_lever_allocator": f2(ev["lever_allocator_keeps_freed_memory"]),
        "evaluation_met": "met" if seconds <= 60 else "not met",
        "evaluation_status": evaluation_status(seconds, rep),
        "repeat_count": len(rep),
        "repeat_seconds": ", ".join(f"{x:.1f}" for x in rep),
        "repeat_seconds_but_last": ", ".join(f"{x:.1f}" for x in rep[:-1]),
        "repeat_last": f"{rep[-1]:.1f}",
        "one_process_moved": mv["one_process"]["answers"],
        "one_process_probes": mv["one_process"]["probes"],
        "greedy_loop_moved": mv["greedy_loop_off"]["answers"],
        "probe_count": mv["batches_of_128"]["probes"],
        "generation_count": mv["batches_of_128"]["probes"] + 320,
        "moved_rows": table(moved_row(label, mv[key]) for label, key in MOVED_ROWS),
    }


def values():
    """Every placeholder of the template, from benchmarks/results/*.json."""
    t = load("training_speed.json")
    # Peak memory: from the memory-only run when there is one (newer than the speed run's own block).
    memory = load("training_memory.json") if (RESULTS / "training_memory.json").is_file() else t
    allruns = [*load("training_speed.earlier-runs.json"), t]
    return {
        **training_values(t, memory, load("optimizer_step.json")),
        **runs_values(allruns),
        **precision_values(load("precision_curves.json")),
        **evaluation_values(load("evaluation.json"), load("evaluation_repeat.json")["seconds"]),
    }


def render():
    return Template(TEMPLATE.read_text()).substitute(values())


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print("Written to docs/PERFORMANCE.md")
