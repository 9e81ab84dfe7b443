"""metrics.json: the document an evaluation returns, which every stage above reads and writes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from obliviate.evaluation.compare import comparison
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.metrics import METRICS
from obliviate.io import file_sha256


def model_sha256(path: str | Path | None) -> str | None:
    """One hash over a model directory's weights, hooks and chat template (None for other paths)."""
    if not path or not Path(path).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.suffix in (".safetensors", ".bin", ".jinja") or f.name in (
            "obliviate_hooks.json",
            "tokenizer_config.json",
            "config.json",
        ):
            h.update(f.name.encode() + file_sha256(f).encode())
    return h.hexdigest()


def document(
    result: dict, model_path, data: EvalData, cfg: EvalConfig, against: dict | None = None, oracle: dict | None = None
) -> dict:
    """metrics.json from evaluate_model's `result`: the values, their metadata, per-item values, hashes,
    settings, and with `against` (the base's document) the comparison; with `oracle` (the oracle's
    document) its hash and metrics."""
    doc = {
        "model": {"path": str(model_path) if model_path else None, "sha256": model_sha256(model_path)},
        "data": {"path": data.path, "target": data.spec.name, "sha256": data.sha256},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
        "metrics": result["metrics"],
        "metric_info": {k: METRICS[k].info() for k in result["metrics"] if k in METRICS},
        "seconds": result["seconds"],
        "items": result["items"],
    }
    if against is not None:
        doc["against"] = against
        doc["comparison"] = comparison(against["metrics"], result["metrics"])
    if oracle is not None:
        doc["oracle"] = {k: oracle[k] for k in ("model", "metrics") if k in oracle}
    return doc
