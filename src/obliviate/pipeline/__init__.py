"""The whole path: `forget` (data -> base evaluation -> unlearning -> evaluation -> model + report),
`compare` (every method on the same data), and the automatic choice of method (`auto`)."""

from obliviate.pipeline.run import BAR, build_data_dir, compare, compare_table, evaluate, forget, slug

__all__ = ["BAR", "build_data_dir", "compare", "compare_table", "evaluate", "forget", "slug"]
