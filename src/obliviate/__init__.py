"""obliviate: make a pretrained language model forget something, and prove it."""

from obliviate.bench.benchmark import run_bench
from obliviate.evaluation.evaluate import evaluate
from obliviate.models.loading import load_model
from obliviate.pipeline import compare, forget

load = load_model  # obliviate.load(path): a saved run's model with its hooks (guardrail, suppress) reattached

__all__ = ["compare", "evaluate", "forget", "load", "load_model", "run_bench"]
__version__ = "0.1.0"
