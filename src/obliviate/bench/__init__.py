"""The benchmark with an oracle: fictitious entities the base model cannot know."""

# Benchmark sizes (BenchConfig overrides). Kept here, free of heavy imports, for the CLI's --size choices.
SIZES = {
    "full": {},
    "smoke": {
        "n_authors": 6,
        "n_forget": 2,
        "n_holdout": 2,
        "finetune_epochs": 2,
        "n_retain_eval": 8,
        "n_world": 6,
        "max_new_tokens": 8,
        "grid": (),
        "steps": 2,
    },
}
