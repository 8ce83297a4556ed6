"""Our search inside the tools users already run: an Optuna sampler and a Ray Tune searcher."""
