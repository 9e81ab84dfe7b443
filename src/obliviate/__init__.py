"""obliviate: make a pretrained language model forget something, and prove it."""

from obliviate.evaluation.evaluate import evaluate
from obliviate.models.loading import load_model
from obliviate.pipeline import forget

__all__ = ["evaluate", "forget", "load_model"]
__version__ = "0.1.0"
