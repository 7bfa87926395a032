"""Checkpoints of a run: which are complete, which one to resume from, and whether resuming is allowed.

A `checkpoints/checkpoint-<step>/` counts only once tailor has written `tailor_checkpoint.json` into it after the
trainer finished saving; one without it (killed mid-save) is moved aside as `.incomplete-checkpoint-<step>`. The
marker records the settings and global batch: a resume with other settings is refused, one on another number of
processes keeps the global batch.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.recipe import hash_json
from tailor.runs import RunPaths, atomic_write_json, read_json
from tailor.schema import Recipe

MARKER = "tailor_checkpoint.json"
# Training keys that change neither the maths nor the data order: resuming with other values is fine.
RESUMABLE_CHANGES = {"logging_steps", "save_steps", "save_total_limit", "resume", "collective_timeout_s", "strategy",
                     "batch_size", "grad_accum", "torch_compile", "liger", "eval_steps", "eval_rows"}

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: a checkpoint was saved on SIGTERM/SIGUSR1; run again to resume


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    info: dict[str, Any]


def training_key(recipe: Recipe, data_hash: str, init_adapter: dict[str, Any] | None = None) -> str:
    """Hash of everything that defines the trained adapter except how the work is split across processes: the
    method's own section and the starting adapter's weights too, when there are any (SFT keys stay as they were)."""
    training = {k: v for k, v in recipe.training.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    method = recipe.method_settings()
    if training.get("method") == "sft":
        training.pop("method")
    extra = {"method": method.model_dump(mode="json")} if method is not None else {}
    if recipe.training.method == "grpo":  # what the rewards score with (project functions: by name only)
        from tailor.metrics import metric_options

        extra["reward_options"] = {**metric_options(recipe), "think_tags": recipe.eval.think_tags}
    if init_adapter is not None:
        extra["init_adapter"] = init_adapter["sha256"]
    peft = {k: v for k, v in recipe.peft.model_dump(mode="json").items()
            if not (k in ("init_adapter", "from_run") and v is None)}
    return hash_json({"model": recipe.model.model_dump(mode="json"), "peft": peft,
                       "training": training, "data_hash": data_hash, **extra})


def marker_info(recipe: Recipe, data_hash: str, world_size: int, grad_accum: int, step: int,
                init_adapter: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a complete checkpoint records about the run that made it."""
    batch = recipe.training.batch_size
    return {"step": step, "training_key": training_key(recipe, data_hash, init_adapter), "world_size": world_size,
            "batch_size": batch, "grad_accum": grad_accum, "global_batch": batch * grad_accum * world_size,
            "recipe": recipe.model_dump(mode="json")}


def mark_complete(checkpoint: Path, info: dict[str, Any]) -> None:
    atomic_write_json(checkpoint / MARKER, info)


def scan(paths: RunPaths) -> tuple[list[Checkpoint], list[Path]]:
    """Complete checkpoints (oldest first) and incomplete checkpoint folders."""
    complete, incomplete = [], []
    folders = paths.checkpoints_dir.iterdir() if paths.checkpoints_dir.is_dir() else []
    for folder in folders:
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if not match or not folder.is_dir():
            continue
        try:
            info = read_json(folder / MARKER)
            complete.append(Checkpoint(folder, int(match.group(1)), info))
        except (OSError, ValueError):
            incomplete.append(folder)
    return sorted(complete, key=lambda c: c.step), incomplete


def set_aside_incomplete(incomplete: list[Path]) -> list[str]:
    """Hide half-written checkpoints from the trainer (kept for inspection, never resumed from)."""
    moved = []
    for folder in incomplete:
        target = folder.with_name(f".incomplete-{folder.name}")
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
        moved.append(target.name)
    return moved


def discard(paths: RunPaths) -> None:
    """Remove the run's checkpoints (training.resume=false)."""
    shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)


def choose_resume(recipe: Recipe, data_hash: str, world_size: int, complete: list[Checkpoint],
                  init_adapter: dict[str, Any] | None = None) -> Checkpoint | None:
    """The latest complete checkpoint, or None; raises when its settings differ or its global batch cannot be kept."""
    if not complete:
        return None
    latest = complete[-1]
    if latest.info.get("training_key") != training_key(recipe, data_hash, init_adapter):
        sections = ("model", "data", "peft", "training", recipe.training.method)
        old, new = latest.info.get("recipe", {}), recipe.model_dump(mode="json")
        changed = _changed_keys({k: old.get(k) for k in sections}, {k: new.get(k) for k in sections})
        if init_adapter is not None and not changed:
            changed = ["the adapter it starts from (peft.init_adapter) was retrained"]
        raise TailorError(f"{latest.path} was saved with other settings ({', '.join(changed) or 'data changed'}); "
                          "resuming would mix two trainings. Start over with ARGS=\"training.resume=false\" "
                          "(removes the checkpoints), or give the new run another name.")
    resume_accum(recipe, latest, world_size)
    return latest


def resume_accum(recipe: Recipe, checkpoint: Checkpoint, world_size: int) -> int:
    """grad_accum that keeps the checkpoint's global batch on `world_size` processes (same micro batch)."""
    target = int(checkpoint.info["global_batch"])
    per_step = recipe.training.batch_size * world_size
    if target % per_step:
        raise TailorError(f"{checkpoint.path} was trained with a global batch of {target} "
                          f"({checkpoint.info['world_size']} processes x batch {checkpoint.info['batch_size']} x "
                          f"accum {checkpoint.info['grad_accum']}); {world_size} process(es) x batch "
                          f"{recipe.training.batch_size} cannot make {target}. Use a process count that divides "
                          f"{target // recipe.training.batch_size}.")
    return target // per_step


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b and key not in RESUMABLE_CHANGES:
            keys.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return keys[:5]
