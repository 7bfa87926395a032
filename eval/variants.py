"""What gets compared: base, tuned (an adapter or a merged model folder), other run folders, predictions files.

Every input is checked before any model loads. Predictions match held-out rows by id: missing ids are counted and
excluded, extra ids counted and ignored, duplicated ids an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tailor.errors import TailorError
from tailor.schema import Recipe

Kind = Literal["base", "adapter", "model", "predictions"]
# Settings that change what a model generates: predictions made under others cannot be reused.
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop")


@dataclass
class Variant:
    """One column of the comparison. Model variants generate; predictions variants bring their outputs."""

    name: str
    kind: Kind
    source: str = ""
    outputs: list[str | None] | None = None
    matching: dict[str, Any] = field(default_factory=dict)

    @property
    def generates(self) -> bool:
        return self.outputs is None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, **self.matching}


def check_adapter(folder: Path) -> Path:
    """A folder holding a peft adapter; a clear error for anything else (a merged model gets a hint)."""
    if (folder / "adapter_config.json").is_file():
        return folder
    hint = (f" It holds a full model (config.json): evaluate it with --model {folder}."
            if (folder / "config.json").is_file() else
            " Run `make train` first, or pass the folder of a saved adapter (--adapter DIR).")
    raise TailorError(f"{folder} holds no adapter (adapter_config.json missing).{hint}")


def check_model_folder(folder: Path) -> Path:
    """A full (e.g. merged) model folder: config.json and weights."""
    if not folder.is_dir():
        raise TailorError(f"--model {folder}: no such folder.")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise TailorError(f"--model {folder}: this is an adapter, not a full model; use --adapter {folder}.")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not (folder / "config.json").is_file() or not weights:
        raise TailorError(f"--model {folder}: not a model folder (needs config.json and *.safetensors weights, as "
                          "written by `make merge` or save_pretrained).")
    return folder


def read_predictions(path: Path, rows: list[dict], name: str) -> Variant:
    """An external predictions file (JSONL, one {"id", "prediction"} per line) matched to the held-out rows."""
    if not path.is_file():
        raise TailorError(f"--predictions {path}: no such file.")
    found: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise TailorError(f"{where}: not valid JSON ({err.msg}).") from None
            if not isinstance(item, dict) or "id" not in item or "prediction" not in item:
                raise TailorError(f"{where}: each line needs an \"id\" and a \"prediction\" key.")
            if not isinstance(item["prediction"], str):
                raise TailorError(f"{where}: \"prediction\" must be a string, got {type(item['prediction']).__name__}.")
            key = str(item["id"])
            if key in found:
                raise TailorError(f"{where}: id {key!r} appears twice; each held-out row needs exactly one "
                                  "prediction.")
            found[key] = item["prediction"]
    return _matched(name, "predictions", str(path), found, rows)


def _matched(name: str, kind: Kind, source: str, found: dict[str, str], rows: list[dict]) -> Variant:
    ids = [r["id"] for r in rows]
    outputs = [found.get(i) for i in ids]
    missing = sum(o is None for o in outputs)
    extra = len(set(found) - set(ids))
    if missing == len(rows):
        raise TailorError(f"{source}: none of its {len(found)} ids matches the {len(rows)} held-out row ids of "
                          f"this run (ids are in runs/<name>/eval/predictions.jsonl); was it made from other data?")
    examples = [i for i, o in zip(ids, outputs) if o is None][:5]
    return Variant(name, kind, source, outputs, {"missing_ids": missing, "extra_ids": extra,
                                                 "missing_examples": examples})


def from_run(folder: Path, rows: list[dict], recipe: Recipe) -> Variant:
    """Another run folder: its predictions reused when they cover these rows with the same prompts and generation
    settings, else its adapter generates on these rows (it must sit on the same base model)."""
    name = folder.name
    predictions, results = folder / "eval" / "predictions.jsonl", folder / "eval" / "results.json"
    reason = "it has no eval/predictions.jsonl"
    if predictions.is_file() and results.is_file():
        reason = _reuse_problem(predictions, results, rows, recipe)
        if reason is None:
            found = {item["id"]: item["tuned"] for item in _read_jsonl(predictions)}
            return _matched(name, "predictions", str(predictions), found, rows)
    if not (folder / "adapter" / "adapter_config.json").is_file():
        raise TailorError(f"--compare-run {folder}: cannot reuse its predictions ({reason}) and it has no "
                          "adapter/ to evaluate on these rows.")
    other = folder / "adapter" / "recipe.json"
    if other.is_file():
        other_model = json.loads(other.read_text(encoding="utf-8")).get("model", {})
        mine = recipe.model.model_dump(mode="json")
        if (other_model.get("name_or_path"), other_model.get("gguf_file")) != (mine["name_or_path"], mine["gguf_file"]):
            raise TailorError(f"--compare-run {folder}: its adapter was trained on {other_model.get('name_or_path')}"
                              f", not on this recipe's {recipe.model.name_or_path}; compare its predictions "
                              "instead (--predictions FILE) or evaluate it with its own recipe.")
    return Variant(name, "adapter", str(folder / "adapter"), matching={"predictions_not_reused": reason})


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _reuse_problem(predictions: Path, results: Path, rows: list[dict], recipe: Recipe) -> str | None:
    """Why another run's predictions cannot stand for these rows (None: they can)."""
    settings = json.loads(results.read_text(encoding="utf-8")).get("settings", {})
    mine = recipe.eval.model_dump(mode="json")
    changed = [k for k in GENERATION_KEYS if k in settings and settings[k] != mine[k]]
    if changed:
        return f"generated with other settings: {', '.join(changed)}"
    prompts = {item.get("id"): item.get("prompt") for item in _read_jsonl(predictions)}
    if any(prompts.get(r["id"]) != r["prompt"] for r in rows):
        return "its rows or prompts differ from these held-out rows"
    return None
