"""Load a recipe: YAML files (with `base:` inheritance) plus command-line overrides, validated by the schema.
Every error names the file (and line) that set the offending key, the key path, and a fix."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from tailor.errors import TailorError
from tailor.schema import ModelSettings, Recipe, field_named, setting_names

CLI = "command line"

# Names tailor does NOT accept, only hints at in an unknown-key error: other tools' (axolotl, LLaMA-Factory, older
# trl) and removed keys. The synonyms tailor accepts (trl/transformers/peft names) live in the schema, nowhere else.
HINT_ONLY = {"padding_free": "packing", "num_epochs": "epochs", "micro_batch_size": "batch_size",
             "max_seq_length": "max_length", "sequence_len": "max_length", "cutoff_len": "max_length",
             "warmup_steps": "warmup_ratio", "rank": "r", "lora_rank": "r", "lora_target": "target_modules",
             "model_name": "name_or_path", "base_model": "name_or_path", "torch_dtype": "dtype", "datasets": "sources",
             "val_set_size": "heldout_fraction"}


@dataclass
class _Layer:
    """Raw recipe values plus where each key path was set (file:line or the command line)."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[tuple, str] = field(default_factory=dict)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read `path` (following `base:` chains), apply `key.path=value` overrides, validate, resolve paths."""
    layer = _read_with_bases(Path(path), chain=())
    for item in overrides:
        _apply_override(layer, item)
    try:
        recipe = Recipe.model_validate(layer.values)
    except ValidationError as err:
        raise TailorError(_explain(err, layer, Path(path))) from None
    recipe._origins = {_dotted(loc): where for loc, where in layer.origin.items()}
    recipe._origins[""] = str(path)
    return recipe


def origin(recipe: Recipe, key: str) -> str:
    """Where a key of a loaded recipe was set ("file:line", "command line"), for errors found after loading, e.g.
    origin(recipe, "peft.init_adapter"); the nearest enclosing key's origin, else the recipe file."""
    origins = recipe._origins
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(_dotted([int(p) if p.isdigit() else p for p in parts[:end]]))
        if found:
            return found
    return origins.get("", "recipe")


def recipe_hash(recipe: Recipe) -> str:
    """Stable hash of the resolved recipe (sha256 of its canonical JSON)."""
    return hash_json(recipe.model_dump(mode="json"))


def section_hash(recipe: Recipe, *sections: str) -> str:
    """Stable hash of some sections of the resolved recipe, e.g. ("model", "data") for the data stage."""
    dumped = recipe.model_dump(mode="json")
    return hash_json({name: dumped[name] for name in sections})


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> _Layer:
    path = path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise TailorError(f"{path}: `base:` chain loops back on itself: {cycle}. Remove one of the `base:` keys.")
    if not path.is_file():
        where = f" (named by `base:` in {chain[-1]})" if chain else ""
        raise TailorError(f"{path}: recipe file not found{where}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TailorError(f"{path}: a recipe must be UTF-8 text (byte {err.start} is not; save it as UTF-8).") from None
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(text, path)
    except yaml.YAMLError as err:
        line = f":{mark.line + 1}" if (mark := getattr(err, "problem_mark", None)) else ""
        raise TailorError(f"{path}{line}: not valid YAML: {getattr(err, 'problem', err)}") from None
    except RecursionError:
        raise TailorError(f"{path}: not valid YAML: nested too deeply.") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TailorError(f"{path}: a recipe must be a mapping of sections (model:, data:, ...), "
                          f"got {type(raw).__name__}.")
    _resolve_paths(raw, path.parent)
    base = raw.pop("base", None)
    layer = _Layer()
    if base is not None:
        if not isinstance(base, str):
            raise TailorError(f"{path}:{lines.get(('base',), '?')}: base: must be a path to another recipe file.")
        layer = _read_with_bases(path.parent / base, chain=(*chain, path))
    _merge(layer, raw, (), lambda key: f"{path}:{lines[key]}" if key in lines else str(path))
    return layer


def _resolve_paths(raw: dict, folder: Path) -> None:
    """Make file paths in a recipe relative to that recipe's folder, so `base:` recipes work from anywhere."""
    data = raw.get("data")
    lists = [data.get("sources")] if isinstance(data, dict) else []
    if isinstance(data, dict) and isinstance(data.get("eval_sets"), dict):
        lists += list(data["eval_sets"].values())
    for sources in lists:
        for source in sources if isinstance(sources, list) else []:
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                source["path"] = _relative(folder / source["path"])
    if isinstance(data, dict) and isinstance(data.get("template"), str):
        data["template"] = _relative(folder / data["template"])
    model = raw.get("model")
    for key in setting_names(ModelSettings)["name_or_path"] if isinstance(model, dict) else ():
        if isinstance(model.get(key), str) and model[key].startswith(("./", "../", "/", "~")):
            model[key] = _relative(folder / Path(model[key]).expanduser())


def _relative(path: Path) -> str:
    """The path relative to the working directory when inside it, else absolute (as a string)."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _key_lines(text: str, file: Path | None = None) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number. A key given twice in one mapping is an
    error naming both lines (YAML loaders keep the last one silently, e.g. a second eval set of the same name)."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = (*prefix, key.value)
                if path in lines and key.value != "<<":
                    raise TailorError(f"{file or 'recipe'}:{key.start_mark.line + 1}: {_dotted(path)}: key given "
                                      f"twice in the same mapping (first at line {lines[path]}); YAML would keep "
                                      "only the last one. Rename or remove one.")
                lines[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*prefix, index)] = item.start_mark.line + 1
                walk(item, (*prefix, index))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _merge(layer: _Layer, raw: dict, prefix: tuple, where) -> None:
    """Deep-merge `raw` into the layer: mappings merge key by key, anything else replaces."""
    target = layer.values
    for part in prefix:
        target = target[part]
    for key in raw:  # a later file sets a setting under another of its names: that name wins, not both
        _drop_other_names(layer, target, prefix, key, keep=raw)
    for key, value in raw.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(layer, value, path, where)
        else:
            target[key] = value
            _set_origins(layer, path, value, where)


def _drop_other_names(layer: _Layer, target: dict, prefix: tuple, key: Any, keep: dict) -> None:
    """Setting `key` replaces the same setting given earlier under another name (lr vs learning_rate); names also in
    `keep` (the same mapping) stay, so giving both there is the schema's error naming both."""
    model = _model_at(prefix)
    field = field_named(model, key) if model is not None and isinstance(key, str) else None
    for other in setting_names(model)[field] if field else ():
        if other != key and other in target and other not in keep:
            del target[other]
            _set_origins(layer, (*prefix, other))


def _set_origins(layer: _Layer, path: tuple, value: Any = None, where=None) -> None:
    """Forget the origins recorded at and under `path`; with `where`, record those of its new `value`."""
    for old in [p for p in layer.origin if p[: len(path)] == path]:
        del layer.origin[old]
    if where is not None:
        _record_origins(layer, value, path, where)


def _record_origins(layer: _Layer, value: Any, path: tuple, where) -> None:
    layer.origin[path] = where(path)
    if isinstance(value, dict):
        for key, item in value.items():
            _record_origins(layer, item, (*path, key), where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _record_origins(layer, item, (*path, index), where)


def _apply_override(layer: _Layer, item: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise TailorError(f"{CLI}: override {item!r} must look like key.path=value, e.g. training.lr=1e-4")
    dotted, text = item.split("=", 1)
    keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.strip().split(".")]
    if not all(str(k) for k in keys):
        raise TailorError(f"{CLI}: override {item!r} has an empty key path.")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if keys[-1:] == ["path"] and keys[:2] == ["data", "sources"] and isinstance(value, str):
        value = _relative(Path(value))
    target = layer.values
    for depth, key in enumerate(keys[:-1]):
        if isinstance(target, list):
            if not isinstance(key, int) or key >= len(target):
                raise TailorError(f"{CLI}: override {item!r}: {_dotted(keys[:depth + 1])} is not an existing "
                                  f"list item (the list has {len(target)} items).")
        elif not isinstance(target.get(key), (dict, list)):
            target[key] = {}
        target = target[key]
    last = keys[-1]
    if isinstance(target, list):
        if not isinstance(last, int) or last >= len(target):
            raise TailorError(f"{CLI}: override {item!r}: index {last} is outside the list.")
    else:
        _drop_other_names(layer, target, tuple(keys[:-1]), last, keep={})
    target[last] = value
    _set_origins(layer, tuple(keys), value, lambda _key: CLI)


def _dotted(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(err: ValidationError, layer: _Layer, top: Path) -> str:
    messages = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if item["type"].startswith("tailor_") and "key" in item.get("ctx", {}):
            # the key (or dotted key path) inside the section or mapping the check was about
            loc = (*loc, *(int(k) if k.isdigit() else k for k in str(item["ctx"]["key"]).split(".")))
        where = _origin_of(loc, layer) or str(top)
        key = _dotted(loc) or "(recipe)"
        if item["type"] == "extra_forbidden":
            section = _model_at(loc[:-1])
            valid = list(section.model_fields) if section is not None else []
            hint = f" Did you mean '{guess}'?" if (guess := _closest(loc)) else ""
            messages.append(f"{where}: {key}: unknown key.{hint} Valid keys here: {', '.join(valid)}.")
        elif item["type"] == "tailor_synonyms":
            other = _dotted((*loc[:-1], item["ctx"]["other"]))
            messages.append(f"{where}: {key}: {other} (at {_origin_of((*loc[:-1], item['ctx']['other']), layer)}) "
                            f"sets the same setting: give only one of the two names.")
        elif item["type"].startswith("tailor_"):
            messages.append(f"{where}: {key}: {item['msg']}.")
        elif item["type"] == "missing":
            messages.append(f"{where}: {key}: required key is missing. Add it to the recipe.")
        else:
            got = item.get("input")
            shown = "" if not loc else f" (got {got!r})" if not isinstance(got, (dict, list)) else \
                f" (got a {type(got).__name__})"
            messages.append(f"{where}: {key}: {item['msg']}{shown}.")
    header = f"Recipe {top} is not valid ({len(messages)} problem{'s' if len(messages) > 1 else ''}):"
    return "\n".join([header, *("  - " + m for m in messages)])


def _origin_of(loc: tuple, layer: _Layer) -> str | None:
    return next((layer.origin[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in layer.origin), None)


def _closest(loc: tuple) -> str | None:
    """The key an unknown key most likely meant: a close name (or synonym) in its section, a name of another tool
    for one of its keys, or the same name in another section (training.lora_alpha -> peft.alpha)."""
    model, unknown = _model_at(loc[:-1]), str(loc[-1])
    if model is not None:
        names = {name: field for field, all_names in setting_names(model).items() for name in all_names}
        if HINT_ONLY.get(unknown) in model.model_fields:
            return _dotted((*loc[:-1], HINT_ONLY[unknown]))
        guess = difflib.get_close_matches(unknown, list(names), n=1, cutoff=0.5)
        if guess:
            return _dotted((*loc[:-1], names[guess[0]]))
    for section in Recipe.model_fields:
        other = _model_at((section,))
        if other is not None and other is not model and (field := field_named(other, unknown)):
            return f"{section}.{field}"
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The recipe section (pydantic model) at a location of the recipe; keys may be synonyms."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = field_named(model, part) if model is not None else None
        if field is None:
            return None
        model = _model_in(model.model_fields[field].annotation)
    return model


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation like `X`, `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for found in map(_model_in, get_args(annotation)) if found is not None), None)
