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


def _at(*parts: str) -> property:
    """A path inside the run folder, as a read-only attribute of RunPaths."""
    def path(self: RunPaths) -> Path:
        return self.root.joinpath(*parts)
    return property(path)


@dataclass(frozen=True)
class RunPaths:
    """Where each stage reads and writes inside `<output_dir>/<name>/`."""

    root: Path
    data_dir = _at("data")
    train_data = _at("data", "train.parquet")
    heldout_data = _at("data", "heldout.parquet")
    manifest = _at("data", "manifest.json")
    rejected = _at("data", "rejected.jsonl")
    adapter_dir = _at("adapter")
    checkpoints_dir = _at("checkpoints")
    merged_dir = _at("merged")
    eval_dir = _at("eval")
    results = _at("eval", "results.json")
    predictions = _at("eval", "predictions.jsonl")
    record = _at("run.json")
    resolved_recipe = _at("recipe.yaml")

    def eval_set_data(self, name: str) -> Path:
        """The prepared rows of one eval set: heldout.parquet for the hash split, data/eval/<name>.parquet else."""
        return self.heldout_data if name == "heldout" else self.data_dir / "eval" / f"{name}.parquet"


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
    """Merge one stage's facts, `usage` and `lineage` (`tailor.lineage.stage_facts`), into `run.json`."""
    facts = stage_facts(paths, stage, info)

    def change(record: dict[str, Any]) -> None:
        record.setdefault("stages", {})[stage] = {**info, **facts,
                                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record["lineage"] = {**(record.get("lineage") or {}), **facts["lineage"]}

    modify_record(paths, change)


def modify_record(paths: RunPaths, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read `run.json` under a lock, apply `change`, recompute totals, write it back atomically; returns it.

    A run.json that is not valid JSON is kept aside as run.json.corrupt and a fresh record is started.
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
