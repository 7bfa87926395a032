"""Experiment tracking: one run per stage (data, train, eval) in one group per pipeline, with full lineage.

`start_stage` records the lineage in `run.json` and the tracker's run config; `finish_stage` logs the stage's
outputs as an artifact that the next stage names as its input. Offline by default (W&B under `runs/<name>/wandb/`,
trackio in `TRACKIO_DIR`). Secrets are never read here, so they cannot reach any file we write.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.lineage import code_version, environment
from tailor.recipe import recipe_hash
from tailor.runs import RunPaths, modify_record, run_paths
from tailor.schema import Recipe

log = logging.getLogger(__name__)

__all__ = ["code_version", "finish_stage", "start_stage", "stage_outputs", "UPSTREAM"]

UPSTREAM = {"data": (), "train": ("data",), "eval": ("data", "train")}
ARTIFACT_TYPES = {"data": "data-card", "train": "model", "eval": "eval-report"}


@dataclass(frozen=True)
class _OpenStage:
    paths: RunPaths
    stage: str
    name: str
    backend: str


_OPEN: dict[int, _OpenStage] = {}


def start_stage(recipe: Recipe, stage: str, config: dict[str, Any] | None = None) -> Any:
    """Record the stage's lineage in run.json and open its tracker run; None when tracking is disabled."""
    paths = run_paths(recipe)
    # everything that made this stage: resolved recipe and hash, data card hash, code, launch and hardware
    facts = {"recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe_hash(recipe), **environment(paths)}

    def note(record: dict[str, Any]) -> None:
        record.update(recipe=facts["recipe"], recipe_hash=facts["recipe_hash"])
        record.setdefault("stage_recipes", {})[stage] = facts["recipe_hash"]
        record["lineage"] = {**(record.get("lineage") or {}), **{k: v for k, v in facts.items() if k != "recipe"}}

    record = modify_record(paths, note)
    if recipe.tracking.mode == "disabled":
        return None
    inputs = {s: record["artifacts"][s] for s in UPSTREAM.get(stage, ())
              if isinstance(record.get("artifacts"), dict) and s in record["artifacts"]}
    full_config = {**facts, "stage": stage, "inputs": inputs, **(config or {})}
    group = recipe.tracking.run_name or recipe.name
    if recipe.tracking.backend == "wandb":
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=recipe.tracking.project, entity=recipe.tracking.entity, group=group, job_type=stage,
                         name=f"{group}-{stage}", tags=recipe.tracking.tags or None, dir=str(paths.root),
                         mode=recipe.tracking.mode, config=full_config)
    elif recipe.tracking.backend == "trackio":
        if recipe.tracking.mode == "online":
            raise TailorError("tracking.backend: trackio is supported offline only (its local store, see "
                              "docs/tracking.md); set tracking.mode: offline, or use tracking.backend: wandb online.")
        try:
            import trackio
        except ImportError:
            raise TailorError(_not_available("trackio")) from None
        run = _TrackioRun(trackio.init(project=recipe.tracking.project, name=f"{group}-{stage}", group=group,
                                       config=full_config, embed=False, auto_log_cpu=False, auto_log_gpu=False))
    else:
        raise TailorError(_not_available(recipe.tracking.backend))
    _OPEN[id(run)] = _OpenStage(paths, stage, recipe.name, recipe.tracking.backend)
    _use_inputs(run, recipe, inputs)
    return run


def finish_stage(run: Any, summary: dict[str, Any]) -> None:
    """Log the stage's outputs as an artifact, write final numbers (plus cost) to the summary, close the run."""
    if run is None:
        return
    opened = _OPEN.pop(id(run), None)
    if opened is not None:
        logged = _log_outputs(run, opened)
        record = modify_record(opened.paths, lambda r: r.setdefault("artifacts", {}).update(
            {opened.stage: logged} if logged else {}))
        usage = ((record.get("stages") or {}).get(opened.stage) or {}).get("usage") or {}
        costs = {f"run/{k}": usage[k] for k in ("seconds", "device_hours", "cost") if usage.get(k) is not None}
        summary = {**costs, **summary}
    run.summary.update(summary)
    run.finish()


def stage_outputs(paths: RunPaths, stage: str) -> list[Path]:
    """The files a stage hands on: data card files, the adapter folder, or the eval report (never raw rows)."""
    candidates = {"data": [paths.data_dir / "data_card.json", paths.data_dir / "data_card.md"],
                  "train": [paths.adapter_dir],
                  "eval": [paths.results, paths.eval_dir / "report.html", paths.eval_dir / "report.md"]}
    return [p for p in candidates.get(stage, []) if p.exists()]


def _use_inputs(run: Any, recipe: Recipe, inputs: dict[str, dict[str, Any]]) -> None:
    """Link the upstream artifacts as inputs where the tracker can (online W&B, trackio); offline W&B refuses
    `use_artifact`, so there the link is the `inputs` entry of the run config."""
    if recipe.tracking.backend == "wandb" and recipe.tracking.mode != "online":
        return
    for facts in inputs.values():
        try:
            run.use_artifact(f"{facts['name']}:latest")
        except Exception as err:  # noqa: BLE001 - a missing upstream artifact must not stop the stage
            log.warning("could not link input artifact %s (%s); its name and digest are in the run config",
                        facts.get("name"), err)


def _log_outputs(run: Any, opened: _OpenStage) -> dict[str, Any] | None:
    """Log the stage's output files as one artifact `<name>-<stage>`; returns its name, type, digest, files."""
    files = stage_outputs(opened.paths, opened.stage)
    if not files:
        return None
    name, kind = f"{opened.name}-{opened.stage}", ARTIFACT_TYPES.get(opened.stage, opened.stage)
    if opened.backend == "trackio":
        import trackio

        artifact = trackio.Artifact(name, type=kind)
    else:
        import wandb

        artifact = wandb.Artifact(name, type=kind, metadata={"stage": opened.stage})
    for path in files:
        if path.is_dir():
            artifact.add_dir(str(path), name=path.name)
        else:
            artifact.add_file(str(path))
    logged = run.log_artifact(artifact)
    digest = getattr(logged, "digest", None) if opened.backend == "trackio" else artifact.digest
    return {"name": name, "type": kind, "digest": None if digest is None else str(digest),
            "files": [p.name for p in files]}


class _TrackioRun:
    """A trackio run behind the small part of the W&B run API the stages use (log, summary, finish)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.summary: dict[str, Any] = {}

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        numbers = {k: v for k, v in _flatten(metrics).items() if isinstance(v, (int, float))}
        if numbers:
            self.run.log(numbers, step=step)

    def log_artifact(self, artifact: Any, **kwargs: Any) -> Any:
        return self.run.log_artifact(artifact, **kwargs)

    def use_artifact(self, name: str) -> Any:
        return self.run.use_artifact(name)

    def finish(self) -> None:
        self.log({f"summary/{k}": v for k, v in _flatten(self.summary).items()})
        self.run.finish()


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _not_available(backend: str) -> str:
    return (f"tracking.backend: {backend} is not installed in this environment. Install it "
            f"(`.venv/bin/pip install {backend}`) or set tracking.backend: wandb in the recipe.")

