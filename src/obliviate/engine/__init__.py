from obliviate.engine.trainer import TrainConfig, TrainResult, fine_tune, train

__all__ = ["TrainConfig", "TrainResult", "fine_tune", "train"]
