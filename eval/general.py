"""General-ability guard: lm-evaluation-harness tasks on base and tuned, so a fine-tune that forgets is caught.

Optional (eval.general_tasks): lm_eval is not pinned (0.4.13 downgrades the pinned python-dateutil), so it is left
to machines that want it. Tasks are lm_eval task names or local task YAML files (offline); tuned runs with peft=ADAPTER.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.schema import Recipe


def check_available(recipe: Recipe) -> None:
    """Fail before any generation when general tasks are asked for and cannot run."""
    if not recipe.eval.general_tasks:
        return
    if importlib.util.find_spec("lm_eval") is None:
        raise TailorError("eval.general_tasks needs lm-evaluation-harness, which is not installed: "
                          "`.venv/bin/pip install lm_eval` (not pinned by tailor), or remove eval.general_tasks.")
    for task in recipe.eval.general_tasks:
        if task.endswith((".yaml", ".yml")) and not Path(task).is_file():
            raise TailorError(f"eval.general_tasks: task file {task} does not exist.")


def _tasks(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(task names, extra include paths) from names and local YAML files."""
    import yaml

    names, folders = [], []
    for task in recipe.eval.general_tasks:
        if task.endswith((".yaml", ".yml")):
            config = yaml.safe_load(Path(task).read_text(encoding="utf-8")) or {}
            names.append(config.get("task") or Path(task).stem)
            folders.append(str(Path(task).resolve().parent))
        else:
            names.append(task)
    return names, sorted(set(folders))


def run_general(recipe: Recipe, model_path: str, adapter: str | None, merged: str | None) -> dict[str, Any]:
    """Per task and metric: base, tuned and tuned - base (lm_eval's own stderr kept)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names, folders = _tasks(recipe)
    manager = TaskManager(include_path=folders or None)
    common = {"tasks": names, "task_manager": manager, "limit": recipe.eval.general_limit, "batch_size": 8}
    tuned_args = f"pretrained={merged}" if merged else f"pretrained={model_path},peft={adapter}"
    runs = {"base": simple_evaluate(model="hf", model_args=f"pretrained={model_path}", **common),
            "tuned": simple_evaluate(model="hf", model_args=tuned_args, **common)}
    table: dict[str, Any] = {}
    for task, metrics in runs["tuned"]["results"].items():
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or "stderr" in key:
                continue
            base = runs["base"]["results"].get(task, {}).get(key)
            table.setdefault(task, {})[key] = {"base": base, "tuned": value,
                                               "delta": value - base if isinstance(base, (int, float)) else None,
                                               "stderr": metrics.get(key.replace(",", "_stderr,", 1))}
    return table
