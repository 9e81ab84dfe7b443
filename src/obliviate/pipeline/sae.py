"""`obliviate sae train` and `obliviate sae features`: train SAEs on a model's layers; list what fires on a target."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from obliviate.errors import UserError
from obliviate.io import read_json, read_jsonl
from obliviate.methods.sae import resolved, target_features, train_sae
from obliviate.models.loading import load_model
from obliviate.models.sae import SAESettings


def data_dir_of(path: str | Path) -> Path:
    """The data directory of a run (RUN/data) or `path` itself when it is one; raises UserError otherwise."""
    path = Path(path)
    for candidate in (path / "data", path):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise UserError(f"{path} is neither a run nor a data directory (no manifest.json); pass one of them.")


def sae_train(
    model: str | None = None,
    layers: list[int] | None = None,
    data: str | Path | None = None,
    settings: SAESettings | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train (or reuse) an SAE on each of `layers` (default: the settings' layer) of `model`, on corpus text
    plus the forget records of `data` (a run or data directory; none: corpus only); returns each SAE's info."""
    settings = settings or SAESettings()
    forget = read_jsonl(data_dir_of(data) / "forget.jsonl") if data is not None else []
    lm = load_model(model)
    out = []
    for layer in layers or [settings.layer]:
        s = resolved(dataclasses.replace(settings, layer=layer), lm.model)
        out.append(train_sae(lm.model, lm.tokenizer, forget, s, say=log)[1])
    return out


def sae_features(
    path: str | Path,
    model: str | None = None,
    settings: SAESettings | None = None,
    top: int = 10,
    contexts: int = 3,
    log: Callable[[str], None] = print,
) -> tuple[dict, list[dict]]:
    """The SAE (trained or cached) for the model `path`'s data was built from (or `model`), and its `top`
    features ranked on that data's forget against retain records, each with `contexts` strongest tokens."""
    if top <= 0:
        raise UserError(f"--top must be a positive number of features, got {top}.")
    data = data_dir_of(path)
    records = {name: read_jsonl(data / f"{name}.jsonl") for name in ("forget", "retain")}
    lm = load_model(model or read_json(data / "manifest.json").get("model"))
    s = resolved(settings or SAESettings(), lm.model)
    sae, info = train_sae(lm.model, lm.tokenizer, records["forget"], s, say=log)
    return info, target_features(lm.model, lm.tokenizer, sae, s, records, top, contexts)


def features_text(info: dict, features: list[dict]) -> str:
    """The ranked features as text for a person: one line of statistics each, then its contexts."""
    s = info["settings"]
    lines = [
        f"SAE {info['key']}: layer {s['layer']} ({s['site']}), {s['width']} features, k {s['k']}; variance "
        f"explained {info['variance_explained']:.3f}, loss {info['loss']:.3f} -> {info['spliced_loss']:.3f} "
        "spliced in",
        "Score: (forget firing frequency + 0.001) / (retain firing frequency + 0.001); t: Welch's t, forget vs retain.",
        "",
    ]
    for f in features:
        lines.append(
            f"feature {f['feature']:>5}  score {f['score']:>8.1f}  forget {f['forget_freq']:.3f}  "
            f"retain {f['retain_freq']:.3f}  mean {f['mean_active']:.2f}  t {f['t']:.1f}"
        )
        for c in f.get("contexts", []):
            lines.append(f"      {c['activation']:>7.2f}  {c['context']!r}")
    return "\n".join(lines)
