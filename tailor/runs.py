"""The run folder: the only channel between stages, written atomically so a crash never leaves half a file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tailor.lineage import stage_facts, totals
from tailor.schema import Recipe

log = logging.getLogger(__name__)

CACHE_ENV = "TAILOR_CACHE"


def cache_dir() -> Path:
    """Where converted models and hardware probes live (`$TAILOR_CACHE`, default `.cache/`)."""
    return Path(os.environ.get(CACHE_ENV, ".cache"))


@dataclass(frozen=True)
class RunPaths:
    """Where each stage reads and writes inside `<output_dir>/<name>/`."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def train_data(self) -> Path:
        return self.data_dir / "train.parquet"

    @property
    def heldout_data(self) -> Path:
        return self.data_dir / "heldout.parquet"

    def eval_set_data(self, name: str) -> Path:
        """The prepared rows of one eval set: heldout.parquet for the hash split, data/eval/<name>.parquet else."""
        return self.heldout_data if name == "heldout" else self.data_dir / "eval" / f"{name}.parquet"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.json"

    @property
    def rejected(self) -> Path:
        return self.data_dir / "rejected.jsonl"

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def merged_dir(self) -> Path:
        return self.root / "merged"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def results(self) -> Path:
        return self.eval_dir / "results.json"

    @property
    def predictions(self) -> Path:
        return self.eval_dir / "predictions.jsonl"

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def resolved_recipe(self) -> Path:
        return self.root / "recipe.yaml"


def run_paths(recipe: Recipe) -> RunPaths:
    """The run folder of a recipe."""
    return RunPaths(Path(recipe.output_dir) / recipe.name)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file via a temporary sibling and rename, so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` whole, on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        if path.exists() or path.is_symlink():
            path.rename(old)
        tmp.rename(path)
        _remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove(path: Path) -> None:
    """Delete a folder tree, or a file or symlink (not what it points to); nothing when absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def update_record(paths: RunPaths, stage: str, info: dict[str, Any]) -> None:
    """Merge one stage's facts into `run.json` (the run record every later tool reads).

    Adds `usage` (duration, devices, device-hours, cost, tokens) and `lineage` (code, packages, launch, hardware,
    data card hash) to the stage's entry and recomputes the run's `totals` (`tailor.lineage`).
    """
    facts = stage_facts(paths, stage, info)

    def change(record: dict[str, Any]) -> None:
        record.setdefault("stages", {})[stage] = {**info, **facts,
                                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record["lineage"] = {**(record.get("lineage") or {}), **facts["lineage"]}

    modify_record(paths, change)


def modify_record(paths: RunPaths, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read `run.json`, apply `change`, recompute totals, write it back atomically; returns the new record.

    A lock file serialises concurrent writers (two stages or processes); a run.json that is not valid JSON is
    kept aside as run.json.corrupt and a fresh record is started, so one bad write never blocks later stages.
    """
    from filelock import FileLock

    paths.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.root / ".run.json.lock"), timeout=120):
        record = _read_record(paths)
        change(record)
        record["totals"] = totals(record)
        atomic_write_json(paths.record, record)
    return record


def _read_record(paths: RunPaths) -> dict[str, Any]:
    if not paths.record.exists():
        return {"stages": {}}
    try:
        record = read_json(paths.record)
        if isinstance(record, dict) and isinstance(record.get("stages", {}), dict):
            return record
        problem = "is not a JSON object with a stages mapping"
    except (ValueError, UnicodeDecodeError) as err:
        problem = f"is not valid JSON ({err})"
    aside = paths.record.with_name("run.json.corrupt")
    os.replace(paths.record, aside)
    log.warning("%s %s; kept as %s, starting a new record", paths.record, problem, aside)
    return {"stages": {}}
