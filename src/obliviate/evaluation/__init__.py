"""The evaluation suite. `obliviate.evaluation.evaluate` is the module; the function is obliviate.evaluate."""

from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.document import document
from obliviate.evaluation.evaluate import evaluate_base, evaluate_model
from obliviate.evaluation.metrics import METRICS

__all__ = ["METRICS", "EvalConfig", "EvalData", "document", "evaluate_base", "evaluate_model"]
