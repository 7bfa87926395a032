"""The run folder: the only channel between stages, written atomically so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tailor.schema import Recipe


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
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def update_record(paths: RunPaths, stage: str, info: dict[str, Any]) -> None:
    """Merge one stage's facts into `run.json` (the run record every later tool reads)."""
    record = read_json(paths.record) if paths.record.exists() else {"stages": {}}
    record.setdefault("stages", {})[stage] = {**info, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(paths.record, record)
