"""Unlearning methods, one file each; importing this package registers them all."""

from obliviate.methods import (  # noqa: F401  (registration side effects)
    adaptive_rmu,
    distill,
    ga,
    gd,
    guardrail,
    idkpo,
    kl,
    npo,
    relabel,
    retain_ft,
    rmu,
    sae,
    sam_npo,
    simnpo,
    suppress,
    whp,
    yao,
)
from obliviate.methods.base import METHODS, EditMethod, LossOutput, Method, get_method, register_method

__all__ = ["METHODS", "EditMethod", "LossOutput", "Method", "get_method", "register_method"]
