"""The data stage: sources -> messages -> clean -> split -> render -> audit -> run folder (atomically).

It streams: worker processes (`worker.py`) turn chunks of input into rendered Parquet shards, the parent keeps
small per-row facts to deduplicate and plan the split (`plan.py`), and train.parquet, heldout.parquet and the eval
sets are assembled from the shards a few thousand rows at a time (`assemble.py`). See docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from data_prep.card import build_card, card_markdown
from data_prep.eval_sets import EvalSet, collect_sets, remove_overlaps
from data_prep.plan import Collected, Plan, collect, plan_split
from tailor.contract import data_hash
from tailor.errors import TailorError
from tailor.recipe import recipe_hash
from tailor.render import Renderer, renderer_for
from tailor.runs import RunPaths, atomic_dir, atomic_write_text, read_json, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)

CODE_DIR = Path(__file__).resolve().parent
# data_prep's own source and the core code that decides what it writes (the renderer: template and loss masks)
CORE_CODE = (CODE_DIR.parent / "tailor" / "render.py",)


def code_version() -> str:
    """Hash of the code that prepares data: any change to it invalidates cached data."""
    files = [*sorted(CODE_DIR.glob("*.py")), *CORE_CODE]
    return _sha("".join(p.read_text(encoding="utf-8") for p in files))


def prepare(recipe: Recipe, force: bool = False) -> dict[str, Any]:
    """Prepare the run's data (or reuse an identical earlier preparation) and return its manifest."""
    from data_prep.readers import source_fingerprint
    from tailor.models import load_tokenizer

    paths = run_paths(recipe)
    inputs = {_source_name(s): source_fingerprint(s) for s in _all_sources(recipe)}
    tokenizer = load_tokenizer(recipe.model)
    renderer = renderer_for(recipe, tokenizer)
    cache_key = _cache_key(recipe, inputs, renderer)
    if not force and paths.manifest.is_file():
        manifest = read_json(paths.manifest)
        if manifest.get("cache_key") == cache_key and paths.train_data.is_file():
            log.info("prepared data is up to date (%s); nothing to do", paths.data_dir)
            manifest["cached"] = True
            return manifest

    started = time.time()
    paths.data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.data_dir.parent, prefix=".data-work.") as work:
        collected = collect(recipe, renderer, Path(work))
        plan = plan_split(recipe, collected)
        try:
            _check_counts(recipe, paths, collected, plan)
            sets = collect_sets(recipe, renderer, Path(work), collected.rejected)
            remove_overlaps(recipe, collected, plan, sets)
            if not len(plan.train):
                raise TailorError(f"data: no training row is left: every one overlaps an eval set "
                                  f"({', '.join(sets)}). Each removed row is listed with file, line and the set row "
                                  f"it overlaps in {paths.rejected}.")
            with atomic_dir(paths.data_dir) as tmp:
                manifest = _assemble(recipe, renderer, collected, plan, tmp, sets)
                manifest.update(cache_key=cache_key, data_hash=data_hash(recipe), recipe_hash=recipe_hash(recipe),
                                data_prep_version=code_version(), inputs=inputs,
                                seconds=round(time.time() - started, 2))
                manifest = {key: manifest[key] for key in MANIFEST_ORDER if key in manifest}
                sources = _card_sources(recipe.data.sources, collected, inputs)
                for name, set_sources in recipe.data.eval_sets.items():
                    sources += _card_sources(set_sources, sets[name].collected, inputs, eval_set=name)
                card = build_card(manifest, plan.train_lengths(), recipe.training.batch_size,
                                  recipe.training.max_length, sources, recipe.training.method)
                (tmp / "data_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
                (tmp / "data_card.md").write_text(card_markdown(card, recipe.name), encoding="utf-8")
                (tmp / paths.manifest.name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
                collected.rejected.copy_to(tmp / paths.rejected.name)
        except TailorError:
            _write_rejected_only(paths, collected)
            raise
    update_record(paths, "data", {"manifest": str(paths.manifest), "rows": manifest["rows"],
                                  "tokens": manifest["tokens"], "data_hash": manifest["data_hash"]})
    return manifest


# method (and preference, for dpo / orpo / kto) only when training.method is not sft: SFT manifests are unchanged.
MANIFEST_ORDER = ("cache_key", "data_hash", "recipe_hash", "data_prep_version", "inputs", "method", "tokenizer", "rows",
                  "tokens", "preference", "pii", "contamination", "eval_sets", "warnings", "audit", "max_tokens_filter",
                  "seconds")


def _check_counts(recipe: Recipe, paths: RunPaths, collected: Collected, plan: Plan) -> None:
    """Fail when too many rows are bad or no training row is left."""
    rejected = collected.rejected
    bad_fraction = rejected.bad / max(collected.rows_read, 1)
    problem = None
    if bad_fraction > recipe.data.max_bad_fraction:
        problem = (f"{rejected.bad} of {collected.rows_read} rows ({bad_fraction:.1%}) are bad, more than "
                   f"data.max_bad_fraction={recipe.data.max_bad_fraction}")
    elif not len(plan.train):
        problem = "no training row is left"
    if problem:
        raise TailorError(f"data: {problem}. Each rejected row is listed with file, line and reason in "
                          f"{paths.rejected}. Top reasons: {dict(rejected.by_reason.most_common(5))}")


def _assemble(recipe: Recipe, renderer: Renderer, collected: Collected, plan: Plan, out: Path,
              sets: dict[str, EvalSet]) -> dict[str, Any]:
    """Write the prepared files from the shards (`assemble.write_splits`); return the manifest's counts."""
    from data_prep.assemble import write_splits

    tokenizer = renderer.tokenizer
    written = write_splits(recipe, tokenizer, collected, plan, out, sets)
    rejected = collected.rejected
    eval_sets: dict[str, Any] = {}
    if recipe.data.hash_split:
        eval_sets["heldout"] = {"file": "heldout.parquet", "sources": [_source_name(s) for s in recipe.data.sources],
                                "rows": written.heldout_rows, "tokens": written.tokens["heldout_total"]}
    eval_sets.update(written.eval_sets)
    contamination = {**written.contamination,
                     "eval_sets": {name: info["removed_from_train"] for name, info in written.eval_sets.items()}}
    method = recipe.training.method
    extra = {} if method == "sft" else {"method": method}
    if written.preference is not None:
        extra["preference"] = written.preference
    return {**extra,
        "tokenizer": {"source": recipe.model.name_or_path, "vocab_size": len(tokenizer),
                      "chat_template_sha256": _sha(renderer.template or tokenizer.chat_template or ""),
                      "end_of_turn": written.audit.end_of_turn},
        "rows": {"read": collected.rows_read + sum(s.collected.rows_read for s in sets.values()),
                 "train": written.train_rows, "heldout": written.heldout_rows,
                 "eval_sets": {name: info["rows"] for name, info in eval_sets.items()},
                 "rejected": rejected.count, "bad": rejected.bad, "rejected_by_reason": dict(rejected.by_reason),
                 "pii_redacted_rows": rejected.changed},
        "tokens": written.tokens,
        "pii": dict(collected.pii + sum((s.collected.pii for s in sets.values()), Counter())),
        "contamination": contamination,
        "eval_sets": eval_sets,
        "warnings": [w for info in written.eval_sets.values() for w in info["warnings"]],
        "audit": written.audit.as_dict(),
        "max_tokens_filter": recipe.data.clean.max_tokens,
    }


def _card_sources(sources: list[Any], collected: Collected, inputs: dict[str, str], **extra: str) -> list[dict]:
    return [{"path": _source_name(s), "format": s.format, "sha256": inputs[_source_name(s)],
             "rows_read": collected.rows_by_source[i], **extra} for i, s in enumerate(sources)]


def _all_sources(recipe: Recipe) -> list[Any]:
    """Training sources, then every eval set's sources."""
    return [*recipe.data.sources, *(s for sources in recipe.data.eval_sets.values() for s in sources)]


def _source_name(source: Any) -> str:
    return source.path if source.path is not None else f"hub:{source.hub}[{source.split}]"


def _cache_key(recipe: Recipe, inputs: dict[str, str], renderer: Renderer) -> str:
    tokenizer = renderer.tokenizer
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())[:: max(1, len(tokenizer) // 2000)])
    parts = [code_version(), data_hash(recipe), json.dumps(inputs, sort_keys=True),
             renderer.template or tokenizer.chat_template or "", str(len(tokenizer)), type(tokenizer).__name__,
             vocab, json.dumps(tokenizer.all_special_tokens)]
    return _sha("\x00".join(parts))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_rejected_only(paths: RunPaths, collected: Collected) -> None:
    """On failure: drop the stale manifest (so no stage trusts old data) and keep the rejected rows to inspect."""
    paths.manifest.unlink(missing_ok=True)
    atomic_write_text(paths.rejected, collected.rejected.text())
