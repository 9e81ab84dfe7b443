"""A TopK sparse autoencoder on one layer's activations, its training, cache, and splicing into the model.

The SAE (Gao et al. 2024, Scaling and evaluating sparse autoencoders, arXiv:2406.04093):

    z     = TopK(ReLU(W_enc (x - b_dec) + b_enc))      k largest pre-activations kept, the rest 0
    x_hat = W_dec z + b_dec                             decoder rows have unit norm
    loss  = mean over tokens and dimensions of (x - x_hat)^2

TopK fixes the number of active features per token, so there is no sparsity penalty to tune
and no shrinkage of the kept activations (as an L1 penalty would cause). The auxiliary loss
for dead features of the paper is left out.

A site is where the activations are read: "resid", the output of decoder layer `layer`
(the residual stream after it, `hidden_states[layer + 1]`), or "mlp", that layer's MLP output
(what its down projection writes into the residual stream).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from obliviate.errors import UserError
from obliviate.io import atomic_dir
from obliviate.models.families import find_family

SITES = ("resid", "mlp")


@dataclass
class SAESettings:
    """How an SAE is trained; every field is part of its cache key."""

    layer: int | None = field(
        default=None, metadata={"help": "decoder layer (0-based) whose activations are encoded; default: a third in"}
    )
    site: str = field(
        default="mlp",
        metadata={"help": "'mlp' (the layer's MLP output, which sae_edit can edit) or 'resid' (the layer's output)"},
    )
    width: int = field(default=1024, metadata={"help": "number of features (dictionary size)"})
    k: int = field(default=32, metadata={"help": "features active per token (TopK; Gao et al. 2024)"})
    tokens: int = field(
        default=50_000,
        metadata={"help": "activation vectors (tokens) to train on: corpus text and the target's forget records"},
    )
    epochs: int = field(default=4, metadata={"help": "passes over the activations"})
    batch_size: int = field(default=256, metadata={"help": "tokens per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and the token order"})


def layer_count(model) -> int:
    return len(decoder_layers(model))


def decoder_layers(model) -> nn.ModuleList:
    """The model's list of decoder layers (the first ModuleList named `layers` or `h`)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h"):
            return module
    raise UserError(f"{type(model).__name__} has no list of decoder layers obliviate can find; use a decoder LM.")


def default_layer(model) -> int:
    return layer_count(model) // 3


def site_module(model, layer: int, site: str) -> nn.Module:
    """The module whose output is the activation at (`layer`, `site`). Raises UserError for a layer or
    site the model does not have."""
    layers = decoder_layers(model)
    if site not in SITES:
        raise UserError(f"Unknown SAE site {site!r}; choose one of: {', '.join(SITES)}.")
    if not 0 <= layer < len(layers):
        raise UserError(
            f"Layer {layer} does not exist in this {len(layers)}-layer model; "
            f"choose a layer from 0 to {len(layers) - 1}."
        )
    if site == "resid":
        return layers[layer]
    mlp = getattr(layers[layer], "mlp", None)
    family = find_family(model)
    if mlp is None and family is not None:  # no MLP module (OPT): its output projection's output is the MLP's
        mlp = family.mlp_out_module(layers[layer])
    if mlp is None:
        raise UserError(f"Layer {layer} of {type(model).__name__} has no `mlp` module; use site 'resid'.")
    return mlp


def output_tensor(output):
    """The hidden states in a module's output (a tensor, or the first element of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_output(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class SparseAutoencoder(nn.Module):
    def __init__(self, d_model: int, width: int, k: int, seed: int = 0):
        super().__init__()
        if width <= 0 or k <= 0:
            raise UserError(f"An SAE needs a positive width and k, got width {width} and k {k}; raise them.")
        if k > width:
            raise UserError(f"An SAE's k ({k}) cannot exceed its width ({width}); lower k or widen it.")
        self.k = k
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(width, d_model, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())  # [width, d]: row i is feature i's direction
        self.W_enc = nn.Parameter(w.clone())  # [width, d]: initialised as the decoder's transpose (the paper)
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.b_dec = nn.Parameter(torch.zeros(d_model))

    @property
    def width(self) -> int:
        return self.W_dec.shape[0]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(W_enc (x - b_dec) + b_enc), [..., width]."""
        return torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The k largest of `pre(x)` per row, the others 0, [..., width]."""
        pre = self.pre(x)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))


def sae_loss(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """mean((x - sae(x))^2) over every element."""
    return (x - sae(x)).pow(2).mean()


def variance_explained(sae: SparseAutoencoder, x: torch.Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the rows of `x` [N, d]."""
    with torch.no_grad():
        err = (x - sae(x)).pow(2).sum()
        var = (x - x.mean(0)).pow(2).sum()
    return 1.0 - (err / var).item()


def fit(acts: torch.Tensor, settings: SAESettings, log=lambda m: None) -> SparseAutoencoder:
    """Train a TopK SAE on `acts` [N, d] (fp32) with Adam; decoder rows renormalised after each step."""
    torch.manual_seed(settings.seed)
    sae = SparseAutoencoder(acts.shape[1], settings.width, settings.k, settings.seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = max(1, math.ceil(len(acts) / settings.batch_size))
    for epoch in range(settings.epochs):
        order = torch.randperm(len(acts), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            x = acts[order[i * settings.batch_size : (i + 1) * settings.batch_size]]
            loss = sae_loss(sae, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sae.normalize_decoder()
            total += loss.item()
        log(f"SAE epoch {epoch + 1}/{settings.epochs}: reconstruction MSE {total / steps_per_epoch:.4g}")
    return sae.eval().requires_grad_(False)


# ---------------------------------------------------------------- activations from the model


class _Captured(Exception):
    """Raised by the capturing hook to stop the forward pass once the wanted activation is read."""


@torch.no_grad()
def activations(
    model, tokenizer, texts: list[str], layer: int, site: str, max_tokens: int | None = None, batch_size: int = 8
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The activations at (`layer`, `site`) of every real token of `texts` (tokenized as given, truncated
    at 256 tokens), fp32 [N, d], and for each row its (text index, token position); stops once
    `max_tokens` rows are read. The forward pass stops at the site: later layers and the head are not run."""
    module = site_module(model, layer, site)
    captured = []

    def capture(m, a, out):
        captured.append(output_tensor(out).detach())
        raise _Captured

    handle = module.register_forward_hook(capture)
    device = next(model.parameters()).device
    rows, where, n = [], [], 0
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=256,
                add_special_tokens=False,
            ).to(device)
            captured.clear()
            try:
                model(**enc)
            except _Captured:
                pass
            h, mask = captured[0].float().cpu(), enc["attention_mask"].bool().cpu()
            h = h.view(*mask.shape, -1)  # OPT's MLP sees its tokens flattened: [batch * length, d]
            for b in range(h.shape[0]):
                length = int(mask[b].sum())
                rows.append(h[b, :length])
                where.extend((start + b, t) for t in range(length))
                n += length
            if max_tokens is not None and n >= max_tokens:
                break
    finally:
        handle.remove()
        tokenizer.padding_side = side
    acts = torch.cat(rows) if rows else torch.zeros(0, model.config.hidden_size)
    if max_tokens is not None:
        acts, where = acts[:max_tokens], where[:max_tokens]
    return acts, where


class Splice:
    """A forward hook that replaces a site's output by the SAE's reconstruction of it."""

    def __init__(self, sae: SparseAutoencoder):
        self.sae = sae

    def __call__(self, module, args, output):
        h = output_tensor(output)
        return replace_output(output, self.sae(h.float()).to(h.dtype))


@torch.no_grad()
def spliced_loss(
    model, tokenizer, texts: list[str], sae: SparseAutoencoder, layer: int, site: str, batch_size: int = 4
) -> dict:
    """The model's mean next-token NLL over the tokens of `texts` as is and with `sae`'s reconstruction
    spliced in at (`layer`, `site`): {"loss", "spliced_loss", "increase"}."""
    device = next(model.parameters()).device
    totals, count = [0.0, 0.0], 0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=256,
            add_special_tokens=False,
        ).to(device)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        n = int((labels[:, 1:] != -100).sum())
        for i, hook in enumerate((None, Splice(sae))):
            handle = site_module(model, layer, site).register_forward_hook(hook) if hook else None
            try:
                totals[i] += model(**enc, labels=labels).loss.item() * n
            finally:
                if handle:
                    handle.remove()
        count += n
    plain, spliced = totals[0] / max(count, 1), totals[1] / max(count, 1)
    return {"loss": plain, "spliced_loss": spliced, "increase": spliced - plain}


# ---------------------------------------------------------------- the cache


def cache_key(model_hash: str, settings: SAESettings, data_hash: str) -> str:
    """A folder name for an SAE: layer, site and width readable, then a hash of everything it depends on."""
    blob = json.dumps({"model": model_hash, "data": data_hash, **asdict(settings)}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"L{settings.layer}-{settings.site}-w{settings.width}-k{settings.k}-{digest}"


SAE_WEIGHTS = "sae.safetensors"
SAE_INFO = "sae.json"


def save_sae(path: Path, sae: SparseAutoencoder, info: dict) -> None:
    """Write `sae` and `info` (its settings, model hash, quality) to `path`, atomically."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, str(tmp / SAE_WEIGHTS))
        (tmp / SAE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def load_sae(path: Path, model_hash: str | None = None) -> tuple[SparseAutoencoder, dict]:
    """The SAE saved at `path` and its info. Raises UserError when it was trained on another model
    than the one whose `weights_hash` is `model_hash`, or the folder is not an SAE."""
    from safetensors.torch import load_file

    try:
        info = json.loads((path / SAE_INFO).read_text(encoding="utf-8"))
        state = load_file(str(path / SAE_WEIGHTS))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a saved SAE ({e}); train one with `obliviate sae train`.") from None
    if model_hash is not None and info.get("model_hash") != model_hash:
        raise UserError(
            f"The SAE in {path} was trained on another model (weights {info.get('model_hash')}, this one "
            f"{model_hash}); train one for this model with `obliviate sae train`."
        )
    width, d = state["W_dec"].shape
    sae = SparseAutoencoder(d, width, info["settings"]["k"])
    sae.load_state_dict(state)
    return sae.eval().requires_grad_(False), info
