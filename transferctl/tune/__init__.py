"""Hyperparameter search with Optuna: a study over the config's `search:` space whose trials
are ordinary finetune runs (`transferctl tune`)."""
