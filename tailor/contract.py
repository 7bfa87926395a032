"""The prepared-data contract: the data stage records `data_hash` in `data/manifest.json`; train and eval refuse
data without their own recipe's hash. Both sides compute it here, so no stage imports another.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tailor.errors import TailorError
from tailor.recipe import hash_json
from tailor.runs import RunPaths, read_json
from tailor.schema import Recipe


def data_hash(recipe: Recipe) -> str:
    """Hash of every recipe setting that changes the prepared data; train and eval check it. training.method
    decides train.parquet's columns (sft keeps the hash it always had)."""
    dumped = recipe.model_dump(mode="json")
    sections = {"model": dumped["model"], "data": dumped["data"]}
    for source in _sources(sections["data"]):  # preference columns count only where they are read
        if source.get("format") not in PREFERENCE_FORMATS:
            for name in PREFERENCE_FIELDS:
                source.get("fields", {}).pop(name, None)
    text = f"{hash_json(sections)}:max_length={recipe.training.max_length}"
    if recipe.training.method != "sft":
        text += f":method={recipe.training.method}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PREFERENCE_FORMATS = ("preference", "unpaired_preference")
PREFERENCE_FIELDS = ("chosen", "rejected", "label")


def _sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [*data.get("sources", []), *(s for sources in data.get("eval_sets", {}).values() for s in sources)]


def check_prepared_data(recipe: Recipe, paths: RunPaths) -> dict[str, Any]:
    """The prepared data must exist and come from this recipe's model and data settings; returns the manifest."""
    if not paths.manifest.is_file() or not paths.train_data.is_file():
        raise TailorError(f"no prepared data in {paths.data_dir}: run `make data RECIPE=...` first.")
    manifest = read_json(paths.manifest)
    if manifest.get("data_hash") != data_hash(recipe):
        raise TailorError(f"{paths.manifest} was prepared with different model/data settings than this recipe; "
                          "run `make data RECIPE=...` again.")
    return manifest
