from obliviate.evaluation.evaluate import METRICS, evaluate, evaluate_model

__all__ = ["METRICS", "evaluate", "evaluate_model"]
