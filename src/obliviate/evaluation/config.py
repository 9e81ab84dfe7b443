"""What an evaluation runs on: its settings (EvalConfig) and a data directory's inputs (EvalData)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from obliviate.errors import UserError
from obliviate.io import read_json, read_jsonl

ATTACK_GROUPS = ("prompting", "quantize", "relearn")


@dataclass
class EvalConfig:
    max_new_tokens: int = field(
        default=24, metadata={"help": "greedy tokens per probe answer (the data stage's probe_tokens)"}
    )
    batch_size: int = field(default=256, metadata={"help": "prompts per generation batch"})
    score_batch_size: int = field(default=16, metadata={"help": "records per likelihood batch"})
    bf16: bool = field(default=True, metadata={"help": "generate and score with a bf16 copy of a CPU fp32 model"})
    attacks: tuple[str, ...] = field(
        default=ATTACK_GROUPS, metadata={"help": "attack groups to run: prompting, quantize, relearn"}
    )
    attack_probes: int = field(
        default=40, metadata={"help": "known target probes re-asked under every attack (seeded subset)"}
    )
    mia_records: int = field(
        default=48, metadata={"help": "forget records and held-out records sampled for membership inference"}
    )
    keep_loss_probes: int = field(
        default=48, metadata={"help": "keep probes whose correct answer's NLL gives cls_loss_keep (seeded subset)"}
    )
    n_wrong: int = field(default=3, metadata={"help": "wrong answer candidates per probe for the truth ratio"})
    min_k: float = field(default=0.2, metadata={"help": "share of least likely tokens averaged by Min-K% and Min-K%++"})
    quant_bits: tuple[int, ...] = field(default=(8, 4), metadata={"help": "bit widths of the quantization attack"})
    quant_group_size: int = field(default=128, metadata={"help": "input columns sharing one quantization scale"})
    relearn_steps: int = field(default=10, metadata={"help": "fine-tuning steps of the relearning attack"})
    relearn_lr: float = field(default=2e-5, metadata={"help": "learning rate of the relearning attack"})
    relearn_records: int = field(default=32, metadata={"help": "forget records the relearning attacker fine-tunes on"})
    seed: int = field(
        default=0, metadata={"help": "seed for every sample drawn (attack probes, MIA records, candidates)"}
    )
    fork: bool = field(
        default=True,
        metadata={
            "help": "where the machine suits it (a Linux CPU with 2 or more PyTorch threads), run attacks in a forked "
            "second process beside the rest (evaluation/worker.py); false: one process"
        },
    )

    def __post_init__(self):
        self.attacks = tuple(self.attacks)
        unknown = [a for a in self.attacks if a not in ATTACK_GROUPS]
        if unknown:
            raise UserError(
                f"Unknown attack group {unknown[0]!r}; choose from {', '.join(ATTACK_GROUPS)}, 'all' or 'none'."
            )
        try:
            self.quant_bits = tuple(int(b) for b in self.quant_bits)
        except ValueError:
            raise UserError(f"quant_bits takes whole numbers like 8,4; got {self.quant_bits!r}.") from None
        if any(not 2 <= b <= 16 for b in self.quant_bits):
            raise UserError(f"quant_bits must lie between 2 and 16; got {self.quant_bits!r}.")
        for name in (
            "max_new_tokens",
            "batch_size",
            "score_batch_size",
            "attack_probes",
            "mia_records",
            "keep_loss_probes",
        ):
            if getattr(self, name) <= 0:
                raise UserError(f"The evaluation setting {name} must be positive; got {getattr(self, name)}.")


@dataclass
class EvalData:
    """A data directory's evaluation inputs (see data/builder.py for the files)."""

    spec: object  # TargetSpec
    probes: list[dict]
    forget: list[dict]
    retain_eval: list[dict]
    verbatim: list[dict] = field(default_factory=list)
    holdout: list[dict] = field(default_factory=list)
    path: str | None = None
    sha256: dict = field(default_factory=dict)
    built_from: str | None = None  # the model the data (and the probes' base answers) came from
    probe_tokens: int = 24  # new tokens of the probes' base answers

    @classmethod
    def from_dir(cls, path: str | Path, split: str = "evaluation") -> EvalData:
        """The inputs in data directory `path`, with the probes of one `split` only: "evaluation" (the
        held-out probes every reported number is measured on) or "validation" (what tuning and the
        automatic choice of method read). Raises UserError if `path` is not a data directory."""
        from obliviate.data.splits import probe_split
        from obliviate.data.targets import TargetSpec

        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise UserError(f"{path} is not a data directory (no manifest.json); build one with `obliviate data`.")
        manifest = read_json(path / "manifest.json")
        if not any(p.get("kind") == "target" for p in read_jsonl(path / "probes.jsonl")):
            raise UserError(
                f"{path / 'probes.jsonl'} holds no target probes, so there is nothing to evaluate; "
                "rebuild the data with `obliviate data`."
            )
        opt = lambda name: read_jsonl(path / name) if (path / name).is_file() else []  # noqa: E731
        return cls(
            TargetSpec(**manifest["target"]),
            probe_split(read_jsonl(path / "probes.jsonl"), split),
            read_jsonl(path / "forget.jsonl"),
            read_jsonl(path / "retain_eval.jsonl"),
            opt("verbatim.jsonl"),
            opt("holdout.jsonl"),
            str(path),
            manifest.get("sha256", {}),
            manifest.get("model"),
            manifest.get("config", {}).get("probe_tokens", cls.probe_tokens),
        )

    @property
    def behaviour(self) -> bool:
        return getattr(self.spec, "kind", "knowledge") == "behaviour"


def sample(rows: list, n: int, seed: str) -> list:
    """`rows` when there are at most `n`, else `n` of them drawn with `seed` (the same draw every run)."""
    return rows if len(rows) <= n else random.Random(seed).sample(rows, n)
