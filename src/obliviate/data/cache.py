"""Built data, kept under ``$OBLIVIATE_HOME/data/<key>`` and reused by the next run that would build the same.

Building data asks the model hundreds of questions, so it dominates a run on a CPU. The data is a
function of the model's weights, the target spec (with the contents of its documents and QA file),
the DataConfig (seed included) and the code that builds it, so the key hashes exactly those: the
weight files' names, sizes and modification times, every field of the spec and the config, the
bytes of each file the spec names, and the source of the `data` and `models` packages with the
built-in seed files. A change to any of them is a different key; nothing is ever invalidated in
place. Delete the folder to rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from obliviate.data.builder import DataConfig
from obliviate.data.targets import TargetSpec
from obliviate.models.loading import obliviate_home

_PACKAGE = Path(__file__).resolve().parent.parent
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def _weights_fingerprint(model_path: str | Path) -> list:
    """Name, size and modification time of each weight file of a local model (or the id itself for a hub id)."""
    path = Path(model_path)
    if not path.exists():
        return [str(model_path)]
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))
    return [str(path.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _code_fingerprint() -> str:
    """Hash of the code and seed files the data depends on."""
    h = hashlib.sha256()
    for folder in ("data", "models"):
        for path in sorted((_PACKAGE / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                h.update(path.relative_to(_PACKAGE).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def _file_digest(path: str) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else f"missing:{path}"


def data_key(model_path: str | Path, spec: TargetSpec, cfg: DataConfig) -> str:
    """The cache key of the data `build_data` makes from this model, spec and config (24 hex digits)."""
    described = {
        "weights": _weights_fingerprint(model_path),
        "spec": dataclasses.asdict(spec),
        "files": [_file_digest(f) for f in [*spec.documents, *([spec.qa] if spec.qa else [])]],
        "config": dataclasses.asdict(cfg),
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_data_dir(model_path: str | Path, spec: TargetSpec, cfg: DataConfig) -> Path:
    """Where the data for this model, spec and config is kept (it may not exist yet)."""
    return obliviate_home() / "data" / data_key(model_path, spec, cfg)
