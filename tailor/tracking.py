"""Weights & Biases logging: one W&B run per stage, grouped by run name, offline unless the recipe says otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import TYPE_CHECKING, Any

from tailor.recipe import recipe_hash
from tailor.runs import run_paths
from tailor.schema import Recipe

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "wandb")


def code_version() -> dict[str, Any]:
    """Git commit and dirty flag of the working tree (None outside a checkout), and key package versions."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = git("status", "--porcelain")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
            "python": platform.python_version(), "packages": versions}


def start_stage(recipe: Recipe, stage: str, config: dict[str, Any] | None = None) -> "Run | None":
    """Open the W&B run of one stage (data, train or eval); None when tracking is disabled."""
    if recipe.tracking.mode == "disabled":
        return None
    import wandb

    paths = run_paths(recipe)
    paths.root.mkdir(parents=True, exist_ok=True)
    group = recipe.tracking.run_name or recipe.name
    full_config = {"recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe_hash(recipe),
                   "stage": stage, "code": code_version(), **(config or {})}
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        project=recipe.tracking.project,
        entity=recipe.tracking.entity,
        group=group,
        job_type=stage,
        name=f"{group}-{stage}",
        tags=recipe.tracking.tags or None,
        dir=str(paths.root),
        mode=recipe.tracking.mode,
        config=full_config,
    )


def finish_stage(run: "Run | None", summary: dict[str, Any]) -> None:
    """Write final numbers to the run summary and close it."""
    if run is None:
        return
    run.summary.update(summary)
    run.finish()
