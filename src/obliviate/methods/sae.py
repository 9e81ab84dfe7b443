"""Sparse-autoencoder features: train (or reuse) an SAE, find the features that fire on the target, switch them off.

`sae` clamps the chosen features through forward hooks saved with the model; `sae_edit` projects
their decoder directions out of the layer's MLP output weights, so the result is a plain Hugging
Face model. Features are ranked by how much more often they fire on forget records than on
retain (and neighbour) records; the SAE model and its cache are in `models/sae.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from obliviate.errors import UserError
from obliviate.methods.base import EditMethod, register_method
from obliviate.models.families import family_of
from obliviate.models.hooks import FeatureClamp, Hooks, attach
from obliviate.models.loading import weights_hash
from obliviate.models.prompts import answer_completion
from obliviate.models.sae import (
    SAESettings,
    SparseAutoencoder,
    activations,
    cache_key,
    decoder_layers,
    default_layer,
    fit,
    load_sae,
    save_sae,
    site_module,
    spliced_loss,
    variance_explained,
)
from obliviate.records import asked, response

log = logging.getLogger(__name__)

HELD_OUT = 0.05  # share of the activations kept out of training to measure variance explained
SPLICE_TEXTS = 16  # corpus passages (not trained on) on which the spliced-in loss is measured
FREQ_FLOOR = 1e-3  # added to both firing frequencies in the ratio, so a feature never seen on retain has a finite score


def sae_root() -> Path:
    from obliviate.models.loading import obliviate_home

    return obliviate_home() / "sae"


def record_texts(tokenizer, records: list[dict]) -> list[str]:
    """Each record as the model sees it in training: its question and answer in the chat template."""
    return [answer_completion(tokenizer, asked(r), response(r)) for r in records]


def corpus_texts() -> list[str]:
    """Target-free text: the Wikipedia and news passages shipped with gensim, interleaved."""
    from obliviate.data.corpus import news_passages, wikipedia_passages

    wiki, news = [p for _, p in wikipedia_passages()], list(news_passages())
    out = []
    for i in range(max(len(wiki), len(news))):
        out += [t for t in (wiki[i] if i < len(wiki) else None, news[i] if i < len(news) else None) if t]
    return out


def training_texts(tokenizer, forget: list[dict]) -> list[str]:
    """The SAE's training text: the forget records, then corpus passages (read until the token budget is spent).
    The corpus's first SPLICE_TEXTS passages are left for the spliced-loss measurement."""
    return record_texts(tokenizer, forget) + corpus_texts()[SPLICE_TEXTS:]


def resolved(settings: SAESettings, model) -> SAESettings:
    """`settings` with the default layer filled in; raises UserError for a layer, site, width, token budget or
    epoch count the model cannot take."""
    s = dataclasses.replace(settings, layer=default_layer(model) if settings.layer is None else settings.layer)
    site_module(model, s.layer, s.site)
    if s.width <= 0:
        raise UserError(f"The SAE width must be a positive number of features, got {s.width}; pass e.g. 2048.")
    if s.tokens <= 0 or s.epochs <= 0:
        raise UserError(f"The SAE needs positive tokens and epochs, got {s.tokens} and {s.epochs}.")
    return s


def train_sae(
    model, tokenizer, forget: list[dict], settings: SAESettings, root: Path | None = None, say=log.info
) -> tuple[SparseAutoencoder, dict]:
    """The SAE for `model` at `settings`' layer and site, trained on `forget` and corpus text, from
    `root` (default $OBLIVIATE_HOME/sae) when cached there, else trained and cached; returns it and its
    info (settings, model hash, key, variance explained, spliced loss, seconds)."""
    settings = resolved(settings, model)
    texts = training_texts(tokenizer, forget)
    model_hash = weights_hash(model)
    data_hash = hashlib.sha256("\x00".join(record_texts(tokenizer, forget)).encode()).hexdigest()[:16]
    key = cache_key(model_hash, settings, data_hash)
    path = (root or sae_root()) / key
    if (path / "sae.json").is_file():
        say(f"Reusing the SAE in {path}")
        return load_sae(path, model_hash)
    say(f"Training an SAE at layer {settings.layer} ({settings.site}), width {settings.width}, k {settings.k} ...")
    t = time.perf_counter()
    acts, _ = activations(model, tokenizer, texts, settings.layer, settings.site, max_tokens=settings.tokens)
    gathered = time.perf_counter() - t
    order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(settings.seed))
    n_held = max(1, int(len(acts) * HELD_OUT))
    held, train = acts[order[:n_held]], acts[order[n_held:]]
    sae = fit(train, settings, log=say)
    seconds = time.perf_counter() - t
    splice = spliced_loss(model, tokenizer, corpus_texts()[:SPLICE_TEXTS], sae, settings.layer, settings.site)
    info = {
        "settings": dataclasses.asdict(settings),
        "model_hash": model_hash,
        "data_hash": data_hash,
        "key": key,
        "tokens": len(train),
        "variance_explained": round(variance_explained(sae, held), 4),
        **{k: round(v, 4) for k, v in splice.items()},
        "seconds_activations": round(gathered, 1),
        "seconds": round(seconds, 1),
    }
    save_sae(path, sae, info)
    say(
        f"SAE trained in {seconds:.0f} s: variance explained {info['variance_explained']:.3f}, loss "
        f"{info['loss']:.3f} -> {info['spliced_loss']:.3f} spliced in; cached in {path}"
    )
    return sae, info


# ---------------------------------------------------------------- finding the target's features


def rank_features(forget_z: torch.Tensor, retain_z: torch.Tensor) -> list[dict]:
    """Features ordered by (forget firing frequency + FREQ_FLOOR) / (retain firing frequency + FREQ_FLOOR),
    highest first (the selection by firing frequency of Farrell et al. 2024, arXiv:2410.19278).

    `forget_z`, `retain_z`: SAE codes [tokens, width] of forget and retain tokens. Each row gives the
    feature, its score, both frequencies, its mean activation where it fires on forget tokens and
    Welch's t-statistic of its activations, forget against retain (scipy.stats.ttest_ind_from_stats,
    unequal variances).
    """
    from scipy.stats import ttest_ind_from_stats

    f_fires, r_fires = forget_z > 0, retain_z > 0
    f_freq, r_freq = f_fires.float().mean(0), r_fires.float().mean(0)
    score = (f_freq + FREQ_FLOOR) / (r_freq + FREQ_FLOOR)
    mean_active = (forget_z * f_fires).sum(0) / f_fires.sum(0).clamp(min=1)
    stats = [(z.mean(0).double().numpy(), z.std(0).double().numpy(), len(z)) for z in (forget_z, retain_z)]
    t = torch.nan_to_num(torch.as_tensor(ttest_ind_from_stats(*stats[0], *stats[1], equal_var=False).statistic))
    order = sorted(range(len(score)), key=lambda i: (-score[i].item(), -f_freq[i].item(), i))
    return [
        {
            "feature": i,
            "score": round(score[i].item(), 3),
            "forget_freq": round(f_freq[i].item(), 4),
            "retain_freq": round(r_freq[i].item(), 4),
            "mean_active": round(mean_active[i].item(), 4),
            "t": round(t[i].item(), 2),
        }
        for i in order
    ]


def top_contexts(z, where, texts, tokenizer, feature: int, n: int = 3, window: int = 6) -> list[dict]:
    """The `n` tokens where `feature` fires most in `z` [tokens, width] (rows located by `where`: (text,
    position)), each with the token and `window` tokens either side."""
    col = z[:, feature]
    out = []
    for row in col.topk(min(n, len(col))).indices.tolist():
        if col[row] <= 0:
            break
        text, pos = where[row]
        ids = tokenizer(texts[text], add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
        left, right = (
            tokenizer.decode(ids[max(0, pos - window) : pos]),
            tokenizer.decode(ids[pos + 1 : pos + 1 + window]),
        )
        token = tokenizer.decode(ids[pos : pos + 1])
        out.append({"activation": round(col[row].item(), 3), "token": token, "context": f"{left}[[{token}]]{right}"})
    return out


def target_features(model, tokenizer, sae, settings: SAESettings, data: dict, top: int, contexts: int = 0):
    """The `top` features of `rank_features` on `data`'s forget and retain records (neighbours included),
    each with its `contexts` strongest forget and retain tokens when asked."""
    if not data.get("forget") or not data.get("retain"):
        raise UserError("Finding SAE features needs forget and retain records; build the data with `obliviate data`.")
    f_texts, r_texts = record_texts(tokenizer, data["forget"]), record_texts(tokenizer, data["retain"])
    f_acts, f_where = activations(model, tokenizer, f_texts, settings.layer, settings.site)
    r_acts, r_where = activations(model, tokenizer, r_texts, settings.layer, settings.site)
    with torch.no_grad():
        f_z, r_z = sae.encode(f_acts), sae.encode(r_acts)
    ranked = rank_features(f_z, r_z)[:top]
    if contexts:
        z, texts = torch.cat([f_z, r_z]), f_texts + r_texts
        where = f_where + [(t + len(f_texts), p) for t, p in r_where]
        for row in ranked:
            row["contexts"] = top_contexts(z, where, texts, tokenizer, row["feature"], contexts)
    return ranked


# ---------------------------------------------------------------- the methods


@dataclass
class SAEMethodConfig(SAESettings):
    features: int = field(default=16, metadata={"help": "how many of the top-ranked features are switched off"})


@dataclass
class SAEClampConfig(SAEMethodConfig):
    clamp: float = field(
        default=-2.0,
        metadata={
            "help": (
                "where a chosen feature fires, its activation is set to clamp x its mean activation on forget "
                "tokens: 0 removes it, negative values push against it (Farrell et al. 2024 clamp to a negative "
                "multiple)"
            )
        },
    )


@dataclass
class SAEEditConfig(SAEMethodConfig):
    scale: float = field(
        default=0.0,
        metadata={
            "help": (
                "the component of the MLP's output along the chosen decoder directions is multiplied by this: "
                "0 projects it out, negative values reverse it (the weight-space form of the clamp, applied "
                "whether or not the feature fires)"
            )
        },
    )


class _SAEMethod(EditMethod):
    def chosen(self, model, tokenizer, data) -> tuple[SparseAutoencoder, dict, SAESettings, list[dict]]:
        """The SAE (trained or cached), its info, the resolved settings and the chosen features."""
        cfg = self.config
        if cfg.features <= 0:
            raise UserError(f"`features` must be a positive number of SAE features, got {cfg.features}.")
        fields = {f.name for f in dataclasses.fields(SAESettings)}
        settings = resolved(SAESettings(**{k: getattr(cfg, k) for k in fields}), model)
        sae, info = train_sae(model, tokenizer, data["forget"], settings)
        return sae, info, settings, target_features(model, tokenizer, sae, settings, data, cfg.features)

    @staticmethod
    def notes(info: dict, features: list[dict]) -> dict:
        keep = ("key", "variance_explained", "loss", "spliced_loss", "seconds")
        return {"sae": {k: info[k] for k in keep if k in info}, "features": features}


@register_method
class SAEClamp(_SAEMethod):
    name = "sae"
    help = (
        "Sparse-autoencoder features: train an SAE on one layer (cached), pick the features that fire far more "
        "on forget than on retain text, and clamp them to a negative value through forward hooks saved with the model."
    )
    source = (
        "Farrell, Lau & Conmy 2024, Applying sparse autoencoders to unlearn knowledge in language models "
        "(arXiv:2410.19278); TopK SAE of Gao et al. 2024 (arXiv:2406.04093)"
    )
    config_class = SAEClampConfig

    def edit(self, model, tokenizer, data, target) -> Hooks:
        sae, info, s, features = self.chosen(model, tokenizer, data)
        ids = [f["feature"] for f in features]
        value = torch.tensor([self.config.clamp * f["mean_active"] for f in features])
        clamp = FeatureClamp(s.layer, s.site, ids, sae.W_enc[ids], sae.b_enc[ids], sae.b_dec, sae.W_dec[ids], value)
        hooks = Hooks(method=self.name, clamps=[clamp.spec()], notes=self.notes(info, features))
        attach(model, hooks)
        return hooks


@register_method
class SAEEdit(_SAEMethod):
    name = "sae_edit"
    help = (
        "Sparse-autoencoder features in weight space: the decoder directions of the features that fire on the target "
        "are projected out of the layer's MLP output weights; a plain Hugging Face model, no hooks."
    )
    source = SAEClamp.source
    config_class = SAEEditConfig

    def edit(self, model, tokenizer, data, target) -> None:
        if self.config.site != "mlp":
            raise UserError("sae_edit edits a layer's MLP output weights, so it needs site=mlp.")
        sae, info, s, features = self.chosen(model, tokenizer, data)
        out = family_of(model, "sae_edit").mlp_out_module(decoder_layers(model)[s.layer])
        project_out(out, sae.W_dec[[f["feature"] for f in features]], self.config.scale)
        log.info("sae_edit projected out features %s of the SAE %s", [f["feature"] for f in features], info["key"])
        return None


@torch.no_grad()
def project_out(out, directions: torch.Tensor, scale: float = 0.0) -> None:
    """Multiply the component of the output of the linear layer `out` along span(`directions`) [n, d] by
    `scale`: W <- W + (scale - 1) Q Q^T W for its weight W [d, hidden] (and its bias), where Q [d, n] is an
    orthonormal basis of the span. A GPT-2 Conv1D stores W transposed ([hidden, d]) and gets
    W <- W + (scale - 1) W Q Q^T."""
    q, _ = torch.linalg.qr(directions.T.double())
    p = (scale - 1.0) * (q @ q.T)
    if isinstance(out, torch.nn.Linear):
        out.weight.add_((p @ out.weight.double()).to(out.weight.dtype))
    else:
        out.weight.add_((out.weight.double() @ p).to(out.weight.dtype))
    if out.bias is not None:
        out.bias.add_((p @ out.bias.double()).to(out.bias.dtype))
