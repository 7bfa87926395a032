"""Start training from an earlier run's adapter (`peft.init_adapter` / `peft.from_run`): SFT, then DPO or GRPO.

Refused before any model loads, naming the recipe line: a folder that is not a trained adapter, one trained on
another base model, or one whose settings differ from the recipe's peft section (training continues that adapter,
so its shape is the adapter's: rank, alpha, dropout, rsLoRA, DoRA; its target modules are the adapter's own).
Its weights hash goes into the training key (retraining it invalidates checkpoints made from the old one); its
path, hash and run into the run record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.recipe import origin
from tailor.schema import Recipe

BASE_KEYS = ("name_or_path", "gguf_file", "revision")
# recipe peft keys the starting adapter decides (its adapter_config.json names): they must agree, not be ignored
SHAPE_KEYS = (("r", "r"), ("alpha", "lora_alpha"), ("dropout", "lora_dropout"), ("use_rslora", "use_rslora"),
              ("use_dora", "use_dora"))


def init_adapter_record(recipe: Recipe) -> dict[str, Any] | None:
    """Check the adapter training starts from; its record ({path, sha256, run, base}), or None without one."""
    folder = recipe.init_adapter_dir
    if folder is None:
        return None
    key = "peft.from_run" if recipe.peft.from_run is not None else "peft.init_adapter"
    where = f"{origin(recipe, key)}: {key}"
    path = Path(folder)
    if not path.is_dir():
        hint = (f" (train run {recipe.peft.from_run!r} first: make train RECIPE=<its recipe>)"
                if recipe.peft.from_run else "")
        raise TailorError(f"{where}: {path} does not exist{hint}.")
    weights = sorted(path.glob("adapter_model.safetensors"))
    if not weights and recipe.model.allow_pickle_weights:
        weights = sorted(path.glob("adapter_model.bin"))
    config_file = path / "adapter_config.json"
    if not config_file.is_file() or not weights:
        raise TailorError(f"{where}: {path} is not a trained adapter folder (it needs adapter_config.json and "
                          "adapter_model.safetensors, as `make train` writes to runs/<name>/adapter; a pickled "
                          "adapter_model.bin only with model.allow_pickle_weights).")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TailorError(f"{where}: {config_file} is not valid JSON ({err}).") from None
    trained = _trained_recipe(path)
    base = {k: trained.get("model", {}).get(k) for k in BASE_KEYS} if trained else \
        {"name_or_path": config.get("base_model_name_or_path")}
    ours = {k: getattr(recipe.model, k) for k in base}
    if _canonical(base) != _canonical(ours):
        raise TailorError(f"{where}: {path} was trained on base model {_show(base)}, this recipe fine-tunes "
                          f"{_show(ours)} (model.name_or_path at {origin(recipe, 'model.name_or_path')}). An adapter "
                          "only fits the base model it was trained on.")
    for ours_key, theirs_key in SHAPE_KEYS:
        theirs = config.get(theirs_key)
        if theirs is not None and theirs != getattr(recipe.peft, ours_key):
            raise TailorError(f"{origin(recipe, f'peft.{ours_key}')}: peft.{ours_key} is "
                              f"{getattr(recipe.peft, ours_key)} but the adapter training starts from ({path}) has "
                              f"{theirs_key}={theirs}: training continues that adapter, set peft.{ours_key}: {theirs}.")
    return {"path": str(path), "sha256": _sha256(weights[0]), "run": trained.get("name") if trained else None,
            "base": base}


def _trained_recipe(path: Path) -> dict[str, Any]:
    """The resolved recipe tailor saved beside the adapter ({} for an adapter from elsewhere)."""
    file = path / "recipe.json"
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    except ValueError:
        return {}


def _canonical(base: dict[str, Any]) -> dict[str, Any]:
    """A model location as compared: local folders resolved (a hub id or package name as given)."""
    where = base.get("name_or_path")
    if isinstance(where, str) and Path(where).expanduser().exists():
        return {**base, "name_or_path": str(Path(where).expanduser().resolve())}
    return base


def _show(base: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in base.items() if v is not None) or "(unknown)"


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_adapter(model: Any, record: dict[str, Any]) -> Any:
    """The base model with the starting adapter loaded as the trainable "default" adapter."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, record["path"], is_trainable=True)
