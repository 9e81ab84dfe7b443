"""Training throughput against the machine's limit and the loops a user would otherwise write.

    python benchmarks/training_speed.py [--steps 8] [--out benchmarks/results/training_speed.json] [--memory-only]
    python benchmarks/training_speed.py --engine-only --batch-size 32   # e.g. on a GPU (benchmarks/gpu_check.sh)

In one process, on the embedded SmolLM2-135M-Instruct and the same job (gradient ascent on
the benchmark's forget-author QA, batch 4, the same steps, learning rate and records):
1. the machine's matmul peak, fp32 and bf16 (2048 x 2048 products);
2. obliviate's engine: `ga`, `npo` (reference model), `ga` with LoRA, with bf16 weights and in
   fp32: seconds per step, tokens per second and achieved FLOP/s (6 N per trained token, 4 N
   under LoRA, plus 2 N per token a per-step reference pass reads; N = parameters, the tied
   head counted once); then each lever switched off alone (full-width head with the mask,
   per-tensor AdamW, a reference copy run every step, PyTorch's fused attention instead of the
   eager one while training on a CPU, glibc's own allocator settings instead of freed memory
   kept in the process);
3. a naive loop in the style of the Beatles notebook seed: fp32, every sequence padded to 128
   tokens, one example at a time;
4. a Hugging Face `Trainer` subclass overriding `compute_loss` (the open-unlearning design),
   with its default precision (fp32) and with bf16;
5. `forgetium` 0.2.1's GradientAscentUnlearner, when it is installed;
6. generation tokens/s, batched vs one prompt at a time;
7. peak resident memory of full fine-tuning with a reference model (npo) and of LoRA, in mixed
   precision, with bf16 weights and with bf16 weights plus `low_memory` (activation checkpointing
   and glibc's 64 KB mmap threshold), each in a fresh process, against the fp32 model's size; also
   the resident set after the imports, before the model is loaded.
The first step of every loop is excluded (warm-up); ratios are taken within this one run.
`--memory-only` runs item 7 alone (into benchmarks/results/training_memory.json): memory does not
depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from obliviate.bench.entities import author_qa, make_authors
from obliviate.engine.trainer import TrainConfig, train
from obliviate.io import read_jsonl, write_json
from obliviate.methods import get_method
from obliviate.models.loading import load_model
from obliviate.models.prompts import encode

LR, BATCH = 1e-5, 4


def records(n: int = 64) -> list[dict]:
    rows = [r for a in make_authors(12, seed=0) for r in author_qa(a)]
    return [{"question": r["question"], "answer": r["answer"]} for r in rows][:n]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """FLOP/s of the best of 3 timings of `reps` n x n products on `device` (on a GPU: 8192 x 8192)."""
    n = 8192 if device != "cpu" else n
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def tokens_per_record(tok, rows) -> float:
    enc = encode(tok, rows, 256)
    return float(enc["attention_mask"].sum()) / len(rows)


@contextlib.contextmanager
def patched(obj, name: str, value):
    """Swap one attribute for the length of a block: how a lever is switched off for its ablation row."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def full_width_logits(model, sub):
    """answer_logits before its levers: the head over every position and the attention mask always passed."""
    logits = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits
    return logits[:, :-1], sub["labels"][:, 1:]


_ADAMW = torch.optim.AdamW


def per_tensor_adamw(params, **kw):
    """AdamW before its lever: PyTorch's default per-tensor loop on CPU instead of the fused kernel."""
    return _ADAMW(params, **{**kw, "fused": None})


def reference_copy():
    """npo before its lever: a deep-copied reference model run on every step's forget batch."""
    from obliviate.methods.npo import NPO

    return patched(NPO, "ref_logprob_subs", ())


# The engine runs compared. Each is (label, method, train options, lever switched off).
ENGINE_RUNS = {
    "ga": ("ga", {}, None),
    "npo": ("npo", {}, None),
    "ga_lora": ("ga", {"lora": True}, None),
    "ga_bf16_weights": ("ga", {"bf16_weights": True}, None),
    "ga_fp32": ("ga", {"bf16": False}, None),
    "ga_full_width_head": ("ga", {}, "full_width"),
    "ga_per_tensor_adamw": ("ga", {}, "per_tensor_adamw"),
    "ga_fused_attention": ("ga", {"attention": "model"}, None),  # the model's own attention (sdpa) on a CPU
    "ga_glibc_allocator": ("ga", {}, "glibc_allocator"),
    "npo_reference_copy": ("npo", {}, "reference_copy"),
}


def lever_off(name: str | None):
    import obliviate.models.logprobs as logprobs

    if name == "full_width":
        return patched(logprobs, "answer_logits", full_width_logits)
    if name == "per_tensor_adamw":
        return patched(torch.optim, "AdamW", per_tensor_adamw)
    if name == "reference_copy":
        return reference_copy()
    if name == "glibc_allocator":  # glibc's own settings: large freed blocks unmapped (obliviate/malloc.py)
        import obliviate.malloc as malloc

        return patched(malloc, "_libc", lambda: None)
    return contextlib.nullcontext()


def engine(method: str, rows, steps: int, **train_options) -> dict:
    # With bf16 weights the model is loaded in bf16, as `obliviate forget --bf16-weights` does.
    lm = load_model(None, dtype=torch.bfloat16 if train_options.get("bf16_weights") else torch.float32)
    m = get_method(method)
    data = {"forget": rows, "retain": rows[::-1]}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        result = train(
            lm.model,
            lm.tokenizer,
            m,
            data,
            TrainConfig(steps=steps, lr=LR, batch_size=BATCH, checkpoint_every=0, **train_options),
            log,
            progress=False,
        )
        times = [r["seconds"] for r in read_jsonl(log)]
    per_step = (times[-1] - times[0]) / (len(times) - 1)
    streams = len(m.batches)
    tokens = tokens_per_record(lm.tokenizer, rows) * BATCH * streams
    n = n_params(lm.model)
    # The reference reads the forget sub-batch: once per step, or once per drawn record when precomputed.
    ref_tokens = tokens / streams if m.needs_ref_model and not m.ref_logprob_subs else 0.0
    per_token = 4 if train_options.get("lora") else 6  # frozen weights get no weight gradients under LoRA
    flops = per_token * n * tokens + 2 * n * ref_tokens
    out = {
        "seconds_per_step": per_step,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / per_step,
        "flops_per_s": flops / per_step,
    }
    if m.needs_ref_model:
        out["ref_seconds"] = result.ref_seconds
        out["ref_share"] = result.ref_seconds / (result.ref_seconds + result.seconds) if m.ref_logprob_subs else None
    return out


def naive_seed_loop(rows, steps: int) -> float:
    """fp32, each example padded to 128 tokens, one forward/backward per example, a step per batch."""
    lm = load_model(None)
    model, tok = lm.model.train(), lm.tokenizer
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    times = []
    for s in range(steps):
        t = time.perf_counter()
        for r in rows[s * BATCH : (s + 1) * BATCH]:
            text = tok.apply_chat_template(
                [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
                tokenize=False,
            )
            enc = tok(text, return_tensors="pt", padding="max_length", max_length=128, truncation=True)
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            loss = -model(**enc, labels=labels).loss / BATCH
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / (len(times) - 1)


def hf_trainer(rows, steps: int, bf16: bool) -> float:
    """A Trainer subclass whose compute_loss negates the LM loss, as open-unlearning builds its methods."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    lm = load_model(None)
    tok = lm.tokenizer
    feats = []
    for r in rows[: steps * BATCH]:
        enc = encode(tok, [r], 256)
        n = int(enc["attention_mask"].sum())
        feats.append(
            {
                "input_ids": enc["input_ids"][0, :n].tolist(),
                "attention_mask": [1] * n,
                "labels": enc["labels"][0, :n].tolist(),
            }
        )

    class GATrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            return (-out.loss, out) if return_outputs else -out.loss

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t)

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            max_steps=steps,
            learning_rate=LR,
            report_to=[],
            save_strategy="no",
            logging_steps=10_000,
            use_cpu=True,
            bf16=bf16,
            lr_scheduler_type="constant",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        GATrainer(
            model=lm.model,
            args=args,
            train_dataset=feats,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
            callbacks=[clock],
        ).train()
    return sum(clock.times[1:]) / (len(clock.times) - 1)


def forgetium_ga(rows, steps: int) -> float | None:
    try:
        from forgetium import ForgetRetainDataset, GradientAscentUnlearner, QADataset, UnlearningConfig
    except ImportError:
        return None
    lm = load_model(None)
    forget = QADataset.from_pairs([(r["question"], r["answer"]) for r in rows[: steps * BATCH]])
    config = UnlearningConfig(num_epochs=1, learning_rate=LR, batch_size=BATCH, device="cpu")
    unlearner = GradientAscentUnlearner(lm.model, lm.tokenizer, config)
    t = time.perf_counter()
    unlearner.fit(ForgetRetainDataset(forget, None))
    return (time.perf_counter() - t) / steps


def generation(rows) -> dict:
    from obliviate.models.generate import answer_questions, generation_copy

    lm = load_model(None)
    g = generation_copy(lm.model)
    qs = [r["question"] for r in rows[:32]]
    out = {}
    for label, bs in (("batched", 32), ("one_by_one", 1)):
        t = time.perf_counter()
        answers = answer_questions(g, lm.tokenizer, qs, max_new_tokens=24, batch_size=bs)
        n = sum(len(lm.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
        out[label] = n / (time.perf_counter() - t)
    return out


def rss_kb(field: str) -> int:
    """This process's resident set now (VmRSS) or at its peak (VmHWM). VmHWM, not ru_maxrss: Linux
    carries ru_maxrss across exec, so a child started by a large parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory(method: str, options: dict) -> dict:
    """Peak resident set (bytes) of a fresh process that loads the model and trains 3 steps, and its
    resident set after the imports, before any model is loaded."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", method, json.dumps(options)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    kb = json.loads(out.stdout.strip().splitlines()[-1])
    return {"peak": kb["peak_kb"] * 1024, "after_imports": kb["imports_kb"] * 1024}


MEMORY_RUNS = {
    "npo_full": ("npo", {}),
    "npo_full_bf16_weights": ("npo", {"bf16_weights": True}),
    "npo_full_reference_copy": ("npo", {"reference_copy": True}),
    "npo_lora": ("npo", {"lora": True}),
    "npo_lora_bf16_weights": ("npo", {"lora": True, "bf16_weights": True}),
    "npo_full_bf16_weights_low_memory": ("npo", {"bf16_weights": True, "low_memory": True}),
    "npo_lora_bf16_weights_low_memory": ("npo", {"lora": True, "bf16_weights": True, "low_memory": True}),
}


def memory() -> dict:
    """The peak resident set of each MEMORY_RUNS configuration, against the fp32 model's size."""
    load_model(None, dtype=torch.bfloat16)  # the bf16 copy of the embedded model exists before any child measures
    size = n_params(load_model(None).model) * 4
    res: dict = {"model_fp32_bytes": size, "memory": {}}
    for label, (method, opts) in MEMORY_RUNS.items():
        m = peak_memory(method, opts)
        m["peak_over_model"] = m["peak"] / size
        m["above_imports_over_model"] = (m["peak"] - m["after_imports"]) / size
        res["memory"][label] = m
        print(
            label,
            {k: round(v / 2**20) if k in ("peak", "after_imports") else round(v, 2) for k, v in m.items()},
            flush=True,
        )
    return res


def main() -> None:
    global BATCH  # --batch-size sets the batch of every run
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/training_speed.json")
    ap.add_argument("--memory-child", nargs=2, metavar=("METHOD", "OPTIONS"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="only the peak memory runs (item 7), written to --out (default benchmarks/results/training_memory.json)",
    )
    ap.add_argument(
        "--engine-only",
        action="store_true",
        help="only obliviate's engine (ga, npo, ga with LoRA) and the device's matmul peak, e.g. on a GPU",
    )
    ap.add_argument("--batch-size", type=int, default=BATCH, help="records per sub-batch (a GPU wants 32 or more)")
    args = ap.parse_args()
    BATCH = args.batch_size
    if args.engine_only:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        peak = matmul_peak(torch.bfloat16, device=device)
        res = {"command": " ".join(["python", *sys.argv]), "device": device, "batch_size": BATCH, "peak_bf16": peak}
        for label in ("ga", "npo", "ga_lora"):
            method, opts, _ = ENGINE_RUNS[label]
            r = engine(method, records(max(64, 2 * BATCH)), args.steps, **opts)
            r["share_of_bf16_peak"] = r["flops_per_s"] / peak
            res[label] = r
            print(
                f"{label}: {r['seconds_per_step']:.3f} s/step, {r['flops_per_s'] / 1e12:.2f} TFLOP/s, "
                f"{r['share_of_bf16_peak']:.1%} of the bf16 peak ({peak / 1e12:.0f} TFLOP/s on {device})",
                flush=True,
            )
        write_json(args.out, res)
        print(f"Written to {args.out}")
        return
    if args.memory_only:
        out = args.out if args.out != ap.get_default("out") else "benchmarks/results/training_memory.json"
        write_json(out, {"command": "python benchmarks/training_speed.py --memory-only", **memory()})
        print(f"Written to {out}")
        return
    if args.memory_child:
        method, options = args.memory_child[0], json.loads(args.memory_child[1])
        imports_kb = rss_kb("VmRSS")
        with reference_copy() if options.pop("reference_copy", False) else contextlib.nullcontext():
            engine(method, records(), 3, **options)
        print(json.dumps({"peak_kb": rss_kb("VmHWM"), "imports_kb": imports_kb}))
        return
    torch.manual_seed(0)
    rows = records()
    res: dict = {
        "command": f"python benchmarks/training_speed.py --steps {args.steps}",
        "threads": torch.get_num_threads(),
    }
    res["peak_flops"] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print("peak", {k: f"{v / 1e9:.0f} GFLOP/s" for k, v in res["peak_flops"].items()}, flush=True)
    res["engine"] = {}
    for label, (method, opts, off) in ENGINE_RUNS.items():
        with lever_off(off):
            r = engine(method, rows, args.steps, **opts)
        r["share_of_bf16_peak"] = r["flops_per_s"] / res["peak_flops"]["bf16"]
        res["engine"][label] = r
        print(label, {k: round(v, 3) for k, v in r.items() if v is not None}, flush=True)
    res["naive_seed_loop_s"] = naive_seed_loop(rows, args.steps)
    print("naive", res["naive_seed_loop_s"], flush=True)
    res["hf_trainer_s"] = {"fp32": hf_trainer(rows, args.steps, False), "bf16": hf_trainer(rows, args.steps, True)}
    print("trainer", res["hf_trainer_s"], flush=True)
    res["forgetium_s"] = forgetium_ga(rows, args.steps)
    print("forgetium", res["forgetium_s"], flush=True)
    res["generation_tokens_per_s"] = generation(rows)
    print("generation", res["generation_tokens_per_s"], flush=True)
    res |= memory()
    e = res["engine"]
    ga = e["ga"]["seconds_per_step"]
    res["ratios"] = {
        "engine_ga_vs_naive": res["naive_seed_loop_s"] / ga,
        "engine_ga_vs_trainer_fp32": res["hf_trainer_s"]["fp32"] / ga,
        "engine_ga_vs_trainer_bf16": res["hf_trainer_s"]["bf16"] / ga,
        "engine_ga_vs_forgetium": res["forgetium_s"] / ga if res["forgetium_s"] else None,
        "generation_batched_vs_one_by_one": res["generation_tokens_per_s"]["batched"]
        / res["generation_tokens_per_s"]["one_by_one"],
        "npo_step_vs_ga_step": e["npo"]["seconds_per_step"] / ga,
        "levers": {
            "bf16_autocast_vs_fp32": e["ga_fp32"]["seconds_per_step"] / ga,
            "answer_only_head_and_no_mask": e["ga_full_width_head"]["seconds_per_step"] / ga,
            "fused_adamw": e["ga_per_tensor_adamw"]["seconds_per_step"] / ga,
            "bf16_weights": ga / e["ga_bf16_weights"]["seconds_per_step"],
            "eager_attention_on_cpu": e["ga_fused_attention"]["seconds_per_step"] / ga,
            "allocator_keeps_freed_memory": e["ga_glibc_allocator"]["seconds_per_step"] / ga,
            "reference_log_probs_once": e["npo_reference_copy"]["seconds_per_step"] / e["npo"]["seconds_per_step"],
        },
    }
    print(json.dumps(res["ratios"], indent=1))
    write_json(args.out, res)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
