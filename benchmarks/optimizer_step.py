"""One optimizer step over the embedded model's parameters: the engine's choices and the libraries'.

    python benchmarks/optimizer_step.py [--out benchmarks/results/optimizer_step.json]

Times (best of 4 steps after a first one that allocates the state) AdamW on fp32 weights, per
tensor and fused, and AdamW on bf16 weights: PyTorch's fused kernel (round to nearest, which
loses small updates), obliviate's BF16AdamW (stochastic rounding), torchao's
`_AdamW(bf16_stochastic_round=True)` and bitsandbytes' `AdamW8bit` (fp32 weights, 8-bit
moments) when those are installed. Gradients are random; only the time matters here.
"""

from __future__ import annotations

import argparse
import time

import torch

from obliviate.engine.optim import BF16AdamW
from obliviate.io import write_json
from obliviate.models.loading import load_model


def optimizers():
    yield "adamw_fp32_per_tensor", torch.float32, lambda ps: torch.optim.AdamW(ps, lr=1e-5, foreach=False)
    yield "adamw_fp32_fused", torch.float32, lambda ps: torch.optim.AdamW(ps, lr=1e-5, fused=True)
    yield "adamw_bf16_fused_round_to_nearest", torch.bfloat16, lambda ps: torch.optim.AdamW(ps, lr=1e-5, fused=True)
    yield "obliviate_bf16_adamw_stochastic", torch.bfloat16, lambda ps: BF16AdamW(ps, lr=1e-5)
    try:
        from torchao.optim import _AdamW

        yield (
            "torchao_adamw_bf16_stochastic",
            torch.bfloat16,
            lambda ps: _AdamW(ps, lr=1e-5, bf16_stochastic_round=True),
        )
    except ImportError:
        pass
    try:
        import bitsandbytes as bnb

        yield "bitsandbytes_adamw_8bit", torch.float32, lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-5)
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/optimizer_step.json")
    args = ap.parse_args()
    res = {"command": "python benchmarks/optimizer_step.py", "threads": torch.get_num_threads(), "seconds_per_step": {}}
    for label, dtype, make in optimizers():
        params = [p for p in load_model(None, dtype=dtype).model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = make(params)
        opt.step()
        times = []
        for _ in range(4):
            t = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t)
        res["seconds_per_step"][label] = min(times)
        print(label, round(min(times), 3), flush=True)
        del opt, params
    write_json(args.out, res)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
