"""The data stage: sources -> messages -> clean -> split -> render -> audit -> run folder (atomically).

Order: read every source (bad rows quarantined), map to messages, redact PII, custom filters, exact and
near-duplicate removal (first occurrence kept), held-out split by content hash, mixing weights and caps, render with
the chat template and loss masks, length filters, held-out contamination check, mask audit, write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.audit import audit_rows, check as check_audit
from data_prep.card import build_card, card_markdown
from data_prep.formats import RowError, is_text_row, row_text, to_messages
from data_prep.readers import BadRow, read_source, source_fingerprint
from data_prep.render import Renderer
from data_prep.split import content_key, split_score
from tailor.errors import TailorError
from tailor.recipe import recipe_hash, section_hash
from tailor.runs import RunPaths, atomic_dir, atomic_write_text, read_json, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)

CODE_DIR = Path(__file__).resolve().parent
NON_SYSTEM = ("user", "assistant", "tool", "text")  # a shared system prompt must not make rows look alike


@dataclass
class Example:
    """A conversation that passed mapping and cleaning, with its stable id and split score."""

    key: str
    where: str
    source: int
    messages: list[dict[str, Any]]
    score: float


@dataclass
class Collected:
    examples: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    rows_by_source: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)

    def reject(self, where: str, kind: str, reason: str, **extra: Any) -> None:
        self.rejected.append({"where": where, "line": _line(where), "kind": kind, "reason": reason, **extra})


def data_hash(recipe: Recipe) -> str:
    """Hash of every recipe setting that changes the prepared data; train and eval check it."""
    return _sha(f"{section_hash(recipe, 'model', 'data')}:max_length={recipe.training.max_length}")


def check_prepared_data(recipe: Recipe, paths: RunPaths) -> dict[str, Any]:
    """The prepared data must exist and come from this recipe's model and data settings."""
    if not paths.manifest.is_file() or not paths.train_data.is_file():
        raise TailorError(f"no prepared data in {paths.data_dir}: run `make data RECIPE=...` first.")
    manifest = read_json(paths.manifest)
    if manifest.get("data_hash") != data_hash(recipe):
        raise TailorError(f"{paths.manifest} was prepared with different model/data settings than this recipe; "
                          "run `make data RECIPE=...` again.")
    return manifest


def code_version() -> str:
    """Hash of data_prep's own source: any change to how data is prepared invalidates cached data."""
    return _sha("".join(p.read_text(encoding="utf-8") for p in sorted(CODE_DIR.glob("*.py"))))


def renderer_for(recipe: Recipe, tokenizer: Any) -> Renderer:
    template = Path(recipe.data.template).read_text(encoding="utf-8") if recipe.data.template else None
    return Renderer(tokenizer, tuple(recipe.data.roles_to_train), template, dict(recipe.data.template_kwargs))


def prepare(recipe: Recipe, force: bool = False) -> dict[str, Any]:
    """Prepare the run's data (or reuse an identical earlier preparation) and return its manifest."""
    from tailor.models import load_tokenizer

    paths = run_paths(recipe)
    inputs = {_source_name(s): source_fingerprint(s) for s in recipe.data.sources}
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
    collected = _collect(recipe)
    examples = _deduplicate(recipe, collected)
    train, heldout = _split(recipe, examples)
    max_tokens = recipe.data.clean.max_tokens
    train_rows = _render(recipe, renderer, train, collected, with_prompt=False)
    heldout_rows = _render(recipe, renderer, heldout, collected, with_prompt=True)
    contamination = _remove_contaminated(recipe, train_rows, heldout_rows, collected)
    heldout_rows = [r for r in heldout_rows if not r.get("_contaminated")]

    mismatches = sum(1 for r in collected.rejected if r["reason"].startswith("chat template renders"))
    audit = audit_rows(train_rows + heldout_rows, tokenizer, mismatches)
    bad = [r for r in collected.rejected if r["kind"] == "bad"]
    bad_fraction = len(bad) / max(collected.rows_read, 1)
    reasons = Counter(r["reason"] for r in collected.rejected if r["kind"] != "changed")
    problem = None
    if bad_fraction > recipe.data.max_bad_fraction:
        problem = (f"{len(bad)} of {collected.rows_read} rows ({bad_fraction:.1%}) are bad, more than "
                   f"data.max_bad_fraction={recipe.data.max_bad_fraction}")
    elif not train_rows:
        problem = "no training row is left"
    if problem:
        _write_rejected_only(paths, collected.rejected)
        raise TailorError(f"data: {problem}. Each rejected row is listed with file, line and reason in "
                          f"{paths.rejected}. Top reasons: {dict(reasons.most_common(5))}")
    try:
        check_audit(audit)
    except TailorError:
        _write_rejected_only(paths, collected.rejected)
        raise

    manifest = {
        "cache_key": cache_key,
        "data_hash": data_hash(recipe),
        "recipe_hash": recipe_hash(recipe),
        "data_prep_version": code_version(),
        "inputs": inputs,
        "tokenizer": {"source": recipe.model.name_or_path, "vocab_size": len(tokenizer),
                      "chat_template_sha256": _sha(renderer.template or tokenizer.chat_template or ""),
                      "end_of_turn": audit.end_of_turn},
        "rows": {"read": collected.rows_read, "train": len(train_rows), "heldout": len(heldout_rows),
                 "rejected": sum(1 for r in collected.rejected if r["kind"] != "changed"), "bad": len(bad),
                 "rejected_by_reason": dict(reasons), "pii_redacted_rows": sum(
                     1 for r in collected.rejected if r["kind"] == "changed")},
        "tokens": {
            "train_total": sum(len(r["input_ids"]) for r in train_rows),
            "train_trained": sum(sum(r["assistant_masks"]) for r in train_rows),
            "heldout_total": sum(len(r["input_ids"]) for r in heldout_rows),
            "train_truncated_rows": sum(r["truncated"] for r in train_rows),
        },
        "pii": dict(collected.pii),
        "contamination": contamination,
        "audit": audit.as_dict(),
        "max_tokens_filter": max_tokens,
        "seconds": round(time.time() - started, 2),
    }
    sources = [{"path": _source_name(s), "format": s.format, "sha256": inputs[_source_name(s)],
                "rows_read": collected.rows_by_source[i]} for i, s in enumerate(recipe.data.sources)]
    card = build_card(manifest, [len(r["input_ids"]) for r in train_rows], recipe.training.batch_size,
                      recipe.training.max_length, sources)
    _write(paths, train_rows, heldout_rows, collected.rejected, manifest, card, recipe.name)
    update_record(paths, "data", {"manifest": str(paths.manifest), "rows": manifest["rows"],
                                  "tokens": manifest["tokens"], "data_hash": manifest["data_hash"]})
    return manifest


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


def _collect(recipe: Recipe) -> Collected:
    """Read every source, map rows to messages, redact PII, apply custom filters; quarantine what cannot be used."""
    from data_prep.filters import load_filters
    from data_prep.pii import Redactor, redact_messages

    clean = recipe.data.clean
    redactor = Redactor(clean.pii.types, clean.pii.patterns) if clean.pii.enabled else None
    filters = load_filters(clean.filters)
    out = Collected()
    for index, source in enumerate(recipe.data.sources):
        kept = 0
        for row in read_source(source):
            if source.max_rows is not None and kept >= source.max_rows:
                break
            out.rows_read += 1
            out.rows_by_source[index] += 1
            if isinstance(row, BadRow):
                out.reject(row.where, "bad", row.reason, raw=row.raw)
                continue
            try:
                messages = to_messages(row.value, source, recipe.data.system_prompt)
            except RowError as err:
                out.reject(row.where, "bad", str(err),
                           raw=json.dumps(row.value, ensure_ascii=False, default=str)[:2000])
                continue
            if redactor is not None:
                messages, found = redact_messages(redactor, messages)
                if found:
                    out.pii.update(found)
                    out.reject(row.where, "changed", "pii redacted", types=dict(found))
            reason = next((r for r in (f(messages) for f in filters) if r is not True), None)
            if reason is not None:
                out.reject(row.where, "filtered", str(reason) if reason else "custom filter")
                continue
            kept += 1
            key = content_key(messages)
            out.examples.append(Example(key, row.where, index, messages, split_score(key, recipe.data.split_seed)))
    return out


def _deduplicate(recipe: Recipe, collected: Collected) -> list[Example]:
    """Drop exact and near duplicates, keeping each first occurrence (file order); both are listed as rejected."""
    from data_prep.near_dup import NearDupFilter, text_of

    dedup = recipe.data.clean.dedup
    examples = collected.examples
    if dedup.exact:
        seen: dict[str, str] = {}
        unique = []
        for example in examples:
            if example.key in seen:
                collected.reject(example.where, "duplicate", "exact duplicate", duplicate_of=seen[example.key])
                continue
            seen[example.key] = example.where
            unique.append(example)
        examples = unique
    if dedup.near and examples:
        near = NearDupFilter(threshold=dedup.threshold)
        where = {e.key: e.where for e in examples}
        found = near.add_many((e.key, text_of(e.messages, roles=NON_SYSTEM)) for e in examples)
        kept = []
        for example, original in zip(examples, found):
            if original is None:
                kept.append(example)
            else:
                collected.reject(example.where, "duplicate", "near duplicate", duplicate_of=where[original])
        examples = kept
    return examples


def _split(recipe: Recipe, examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """Split by content hash, cap the sizes (lowest scores first: a stable, random-looking subset), apply weights."""
    ordered = sorted(examples, key=lambda e: e.score)
    heldout = [e for e in ordered if e.score < recipe.data.heldout_fraction][: recipe.data.max_heldout_rows]
    train = [e for e in ordered if e.score >= recipe.data.heldout_fraction][: recipe.data.max_train_rows]
    weights = [s.weight for s in recipe.data.sources]
    if any(w != 1.0 for w in weights):
        mixed = []
        for example in train:
            weight = weights[example.source]
            extra = split_score(example.key, recipe.data.split_seed + 1) < weight - int(weight)
            mixed.extend([example] * (int(weight) + int(extra)))
        train = mixed
    return train, heldout


def _line(where: str) -> int:
    tail = where.rsplit(":", 1)[-1].replace("row ", "")
    return int(tail) if tail.isdigit() else 0


def _render(recipe: Recipe, renderer: Renderer, examples: list[Example], collected: Collected,
            with_prompt: bool) -> list[dict[str, Any]]:
    from data_prep.parallel import render_all

    clean = recipe.data.clean
    results = render_all(renderer, [e.messages for e in examples], recipe.training.max_length, recipe.data.num_proc)
    rows = []
    for example, rendered in zip(examples, results):
        if isinstance(rendered, str):
            collected.reject(example.where, "bad", rendered)
            continue
        length = len(rendered.input_ids) if not rendered.truncated else recipe.training.max_length + 1
        if clean.max_tokens is not None and (rendered.truncated or length > clean.max_tokens):
            collected.reject(example.where, "filtered", "too long")
            continue
        if clean.min_tokens is not None and length < clean.min_tokens:
            collected.reject(example.where, "filtered", "too short")
            continue
        row = {"id": example.key[:16], "source": example.where, "input_ids": rendered.input_ids,
               "assistant_masks": rendered.assistant_masks, "truncated": rendered.truncated,
               "trained_turns": rendered.trained_turns, "role_tokens": json.dumps(rendered.role_tokens),
               "role_trained": json.dumps(rendered.role_trained)}
        if with_prompt:
            row["messages"] = json.dumps(example.messages, ensure_ascii=False)
            row["prompt"] = renderer.prompt(example.messages)
            row["reference"] = "" if is_text_row(example.messages) else example.messages[-1]["content"]
        row["_text"] = row_text(example.messages)
        rows.append(row)
    return rows


def _remove_contaminated(recipe: Recipe, train: list[dict], heldout: list[dict],
                         collected: Collected) -> dict[str, Any]:
    """Mark held-out rows whose n-grams overlap a training row past the threshold; they are removed (counted)."""
    from data_prep.contamination import find_contaminated

    settings = recipe.data.contamination
    summary = {"enabled": settings.enabled, "ngram": settings.ngram, "threshold": settings.threshold, "removed": 0}
    if not settings.enabled or not train or not heldout:
        return summary
    source_of = {r["id"]: r["source"] for r in train}
    found = find_contaminated(((r["id"], r["_text"]) for r in train), ((r["id"], r["_text"]) for r in heldout),
                              n=settings.ngram, threshold=settings.threshold)
    flagged = {c.heldout_key: c for c in found}
    for row in heldout:
        hit = flagged.get(row["id"])
        if hit is not None:
            row["_contaminated"] = True
            collected.reject(row["source"], "contaminated", "held-out row overlaps a training row",
                             overlap=round(hit.overlap, 3), train_row=source_of.get(hit.train_key))
    summary["removed"] = len(flagged)
    return summary


def _write(paths: RunPaths, train: list[dict], heldout: list[dict], rejected: list[dict], manifest: dict,
           card: dict, name: str) -> None:
    """Write the whole data folder at once: it appears complete or not at all."""
    from datasets import Dataset

    def public(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]

    with atomic_dir(paths.data_dir) as tmp:
        Dataset.from_list(public(train)).to_parquet(str(tmp / paths.train_data.name))
        Dataset.from_list(public(heldout)).to_parquet(str(tmp / paths.heldout_data.name))
        (tmp / paths.rejected.name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected),
                                               encoding="utf-8")
        (tmp / "data_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (tmp / "data_card.md").write_text(card_markdown(card, name), encoding="utf-8")
        (tmp / paths.manifest.name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_rejected_only(paths: RunPaths, rejected: list[dict]) -> None:
    """On failure: drop the stale manifest (so no stage trusts old data) and keep the rejected rows to inspect."""
    paths.manifest.unlink(missing_ok=True)
    atomic_write_text(paths.rejected, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))

