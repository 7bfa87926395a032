"""The data stage: sources -> messages -> split -> rendered, masked examples -> run folder (atomically)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.formats import RowError, to_messages
from data_prep.readers import BadRow, read_rows
from data_prep.render import prompt_text, render_example
from data_prep.split import content_key, split_score
from tailor.errors import TailorError
from tailor.recipe import recipe_hash, section_hash
from tailor.runs import RunPaths, atomic_dir, atomic_write_text, read_json, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)

# Bump when a change to data_prep changes what it writes: it invalidates every cached prepared set.
DATA_PREP_VERSION = "1"


@dataclass
class Example:
    """A conversation that passed mapping, with its stable id and split score."""

    key: str
    where: str
    messages: list[dict[str, str]]
    score: float


@dataclass
class Collected:
    examples: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0


def data_hash(recipe: Recipe) -> str:
    """Hash of every recipe setting that changes the prepared data; train and eval check it."""
    return _sha(f"{section_hash(recipe, 'model', 'data')}:max_length={recipe.training.max_length}")


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def prepare(recipe: Recipe, force: bool = False) -> dict[str, Any]:
    """Prepare the run's data (or reuse an identical earlier preparation) and return its manifest."""
    from tailor.models import load_tokenizer

    paths = run_paths(recipe)
    inputs = {source.path: file_sha256(Path(source.path)) for source in _existing_sources(recipe)}
    tokenizer = load_tokenizer(recipe.model)
    cache_key = _cache_key(recipe, inputs, tokenizer)
    if not force and paths.manifest.is_file():
        manifest = read_json(paths.manifest)
        if manifest.get("cache_key") == cache_key and paths.train_data.is_file():
            log.info("prepared data is up to date (%s); nothing to do", paths.data_dir)
            return manifest

    started = time.time()
    collected = _collect(recipe)
    train, heldout = _split(recipe, collected)
    train_rows = _render(recipe, tokenizer, train, collected, with_prompt=False)
    heldout_rows = _render(recipe, tokenizer, heldout, collected, with_prompt=True)

    bad = [r for r in collected.rejected if r["kind"] == "bad"]
    bad_fraction = len(bad) / max(collected.rows_read, 1)
    reasons = Counter(r["reason"].split(":")[0] for r in collected.rejected)
    if bad_fraction > recipe.data.max_bad_fraction or not train_rows:
        _write_rejected_only(paths, collected.rejected)
        problem = "no training row is left" if not train_rows else (
            f"{len(bad)} of {collected.rows_read} rows ({bad_fraction:.1%}) are bad, more than "
            f"data.max_bad_fraction={recipe.data.max_bad_fraction}")
        raise TailorError(f"data: {problem}. Each rejected row is listed with file, line and reason in "
                          f"{paths.rejected}. Top reasons: {dict(reasons.most_common(5))}")

    manifest = {
        "cache_key": cache_key,
        "data_hash": data_hash(recipe),
        "recipe_hash": recipe_hash(recipe),
        "data_prep_version": DATA_PREP_VERSION,
        "inputs": inputs,
        "tokenizer": {"source": recipe.model.name_or_path, "vocab_size": len(tokenizer),
                      "chat_template_sha256": _sha(tokenizer.chat_template or "")},
        "rows": {"read": collected.rows_read, "train": len(train_rows), "heldout": len(heldout_rows),
                 "rejected": len(collected.rejected), "bad": len(bad),
                 "rejected_by_reason": dict(reasons)},
        "tokens": {
            "train_total": sum(len(r["input_ids"]) for r in train_rows),
            "train_trained": sum(sum(r["assistant_masks"]) for r in train_rows),
            "heldout_total": sum(len(r["input_ids"]) for r in heldout_rows),
            "train_truncated_rows": sum(r["truncated"] for r in train_rows),
        },
        "seconds": round(time.time() - started, 2),
    }
    _write(paths, train_rows, heldout_rows, collected.rejected, manifest)
    update_record(paths, "data", {"manifest": str(paths.manifest), "rows": manifest["rows"],
                                  "tokens": manifest["tokens"], "data_hash": manifest["data_hash"]})
    return manifest


def _existing_sources(recipe: Recipe):
    for index, source in enumerate(recipe.data.sources):
        if not Path(source.path).is_file():
            raise TailorError(f"data.sources[{index}].path: file {source.path} does not exist.")
        yield source


def _cache_key(recipe: Recipe, inputs: dict[str, str], tokenizer: Any) -> str:
    parts = [DATA_PREP_VERSION, data_hash(recipe), json.dumps(inputs, sort_keys=True),
             tokenizer.chat_template or "", str(len(tokenizer)), type(tokenizer).__name__]
    return _sha("\x00".join(parts))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _collect(recipe: Recipe) -> Collected:
    """Read every source, map rows to messages, and quarantine the ones that cannot be used."""
    out = Collected()
    for source in recipe.data.sources:
        for row in read_rows(Path(source.path), source.file_type):
            out.rows_read += 1
            if isinstance(row, BadRow):
                out.rejected.append({"where": row.where, "line": row.line, "kind": "bad", "reason": row.reason,
                                     "raw": row.raw})
                continue
            try:
                messages = to_messages(row.value, source, recipe.data.system_prompt)
            except RowError as err:
                out.rejected.append({"where": row.where, "line": row.line, "kind": "bad", "reason": str(err),
                                     "raw": json.dumps(row.value, ensure_ascii=False, default=str)[:2000]})
                continue
            key = content_key(messages)
            out.examples.append(Example(key, row.where, messages, split_score(key, recipe.data.split_seed)))
    return out


def _split(recipe: Recipe, collected: Collected) -> tuple[list[Example], list[Example]]:
    """Drop exact duplicates (kept in rejected.jsonl), split by content hash, apply the row caps."""
    seen: dict[str, str] = {}
    unique = []
    for example in collected.examples:
        if example.key in seen:
            collected.rejected.append({"where": example.where, "line": _line(example.where), "kind": "duplicate",
                                       "reason": "exact duplicate", "duplicate_of": seen[example.key]})
            continue
        seen[example.key] = example.where
        unique.append(example)
    unique.sort(key=lambda e: e.score)
    heldout = [e for e in unique if e.score < recipe.data.heldout_fraction]
    train = [e for e in unique if e.score >= recipe.data.heldout_fraction]
    return train[: recipe.data.max_train_rows], heldout[: recipe.data.max_heldout_rows]


def _line(where: str) -> int:
    tail = where.rsplit(":", 1)[-1].replace("row ", "")
    return int(tail) if tail.isdigit() else 0


def _render(recipe: Recipe, tokenizer: Any, examples: list[Example], collected: Collected,
            with_prompt: bool) -> list[dict[str, Any]]:
    rows = []
    for example in examples:
        try:
            rendered = render_example(tokenizer, example.messages, recipe.training.max_length)
        except RowError as err:
            collected.rejected.append({"where": example.where, "line": _line(example.where), "kind": "bad",
                                       "reason": str(err)})
            continue
        row = {"id": example.key[:16], "source": example.where, "input_ids": rendered.input_ids,
               "assistant_masks": rendered.assistant_masks, "truncated": rendered.truncated}
        if with_prompt:
            row["messages"] = json.dumps(example.messages, ensure_ascii=False)
            row["prompt"] = prompt_text(tokenizer, example.messages)
            row["reference"] = example.messages[-1]["content"]
        rows.append(row)
    return rows


def _write(paths: RunPaths, train: list[dict], heldout: list[dict], rejected: list[dict], manifest: dict) -> None:
    """Write the whole data folder at once: it appears complete or not at all."""
    from datasets import Dataset

    with atomic_dir(paths.data_dir) as tmp:
        Dataset.from_list(train).to_parquet(str(tmp / paths.train_data.name))
        Dataset.from_list(heldout).to_parquet(str(tmp / paths.heldout_data.name))
        (tmp / paths.rejected.name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected),
                                               encoding="utf-8")
        (tmp / paths.manifest.name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_rejected_only(paths: RunPaths, rejected: list[dict]) -> None:
    """On failure: drop the stale manifest (so no stage trusts old data) and keep the rejected rows to inspect."""
    paths.manifest.unlink(missing_ok=True)
    atomic_write_text(paths.rejected, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
