"""Unlearning methods, one file each; importing this package registers them all."""

from obliviate.methods import ga, gd, kl, npo, relabel, retain_ft, simnpo, yao  # noqa: F401  (registration side effects)
from obliviate.methods.base import METHODS, LossOutput, Method, get_method, register

__all__ = ["METHODS", "LossOutput", "Method", "get_method", "register"]
