"""Eval stage: held-out loss and task metrics for the base model and base + adapter, side by side."""
