"""Our search inside the tools users already run: an Optuna sampler, MLflow tracking."""
