from obliviate.models.loading import LoadedModel, embedded_gguf_path, load_model, resolve_model

__all__ = ["LoadedModel", "embedded_gguf_path", "load_model", "resolve_model"]
