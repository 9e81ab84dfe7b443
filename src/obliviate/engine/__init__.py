from obliviate.engine.trainer import TrainConfig, TrainResult, fine_tune, has_checkpoint, train

__all__ = ["TrainConfig", "TrainResult", "fine_tune", "has_checkpoint", "train"]
