"""Named evaluation sets (`data.eval_sets`): read from their own files, never split, never trained on.

Each set is cleaned and rendered by the same workers as the training rows (rejections in the shared
rejected.jsonl). A set is fixed, so contamination removes the *training* rows that overlap it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.plan import Collected, Plan, Rejections, _usable, collect
from tailor.render import Renderer
from tailor.errors import TailorError
from tailor.schema import Recipe

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """One named set after cleaning: its collected rows and the usable ones, in split-score order."""

    name: str
    collected: Collected
    rows: np.ndarray
    tokens: np.ndarray
    files: list[str]
    removed_train: int = 0  # training rows removed because they overlap this set
    overlapped: int = 0  # rows of this set that some training row overlapped
    warnings: list[str] = field(default_factory=list)


def collect_sets(recipe: Recipe, renderer: Renderer, work: Path, rejected: Rejections) -> dict[str, EvalSet]:
    """Read, clean and render every named set; an empty, too bad or unusable set is an error naming it."""
    data = recipe.data
    sets: dict[str, EvalSet] = {}
    for name, sources in data.eval_sets.items():
        folder = work / f"eval-{name}"
        folder.mkdir()
        files = [s.path if s.path is not None else f"hub:{s.hub}" for s in sources]
        bad_before, count_before = rejected.bad, rejected.by_reason.copy()
        collected = collect(recipe, renderer, folder, sources, rejected=rejected, eval_set=True)
        rows = _usable(collected, collected.ranked(), data.clean)
        where = f"eval set {name!r} ({', '.join(files)})"
        if not collected.rows_read:
            raise TailorError(f"data.eval_sets.{name}: {where} has no row: the files are empty.")
        bad = rejected.bad - bad_before
        reasons = dict((rejected.by_reason - count_before).most_common(5))
        if bad / collected.rows_read > data.max_bad_fraction:
            raise TailorError(f"data.eval_sets.{name}: {bad} of {collected.rows_read} rows of {where} are bad, more "
                              f"than data.max_bad_fraction={data.max_bad_fraction}. Each is listed with file, line "
                              f"and reason in rejected.jsonl. Top reasons: {reasons}")
        if not len(rows):
            raise TailorError(f"data.eval_sets.{name}: none of the {collected.rows_read} rows of {where} is usable "
                              f"(each is listed with file, line and reason in rejected.jsonl). Top reasons: {reasons}")
        sets[name] = EvalSet(name, collected, rows, collected.tokens(recipe.training.max_length), files)
    return sets


def remove_overlaps(recipe: Recipe, collected: Collected, plan: Plan, sets: dict[str, EvalSet]) -> dict[str, int]:
    """Remove (reject) the training rows overlapping a set; return the count per set, warn on a fully hit set."""
    from data_prep.contamination import NgramIndex
    from data_prep.shards import block_rows

    settings = recipe.data.contamination
    if not settings.enabled or not sets or not len(plan.train):
        return {name: 0 for name in sets}
    train = plan.train[np.r_[True, plan.train[1:] != plan.train[:-1]]]  # weights repeat rows next to each other
    block = block_rows(float(plan.tokens[train].mean()))
    indexes = {name: NgramIndex(_set_texts(s), n=settings.ngram) for name, s in sets.items()}
    dropped: dict[int, str] = {}
    hit: dict[str, set[str]] = {name: set() for name in sets}
    start = 0
    for table in collected.read(train, ["_text"], block):
        texts = table.column("_text").to_pylist()
        rows = train[start:start + len(texts)].tolist()
        start += len(texts)
        for name, index in indexes.items():
            for row, (overlap, key) in zip(rows, index.overlaps(texts)):
                if key is None or overlap < settings.threshold or row in dropped:
                    continue
                dropped[row] = name
                hit[name].add(key)
                collected.rejected.add(collected.where(row), "contaminated",
                                       f"training row overlaps eval set {name}", overlap=round(overlap, 3),
                                       eval_row=key)
    if dropped:
        plan.train = plan.train[~np.isin(plan.train, np.fromiter(dropped, dtype=np.int64))]
    removed = {name: sum(1 for s in dropped.values() if s == name) for name in sets}
    for name, eval_set in sets.items():
        eval_set.removed_train, eval_set.overlapped = removed[name], len(hit[name])
        if eval_set.overlapped and eval_set.overlapped == len(eval_set.rows):
            message = (f"eval set {name!r} ({', '.join(eval_set.files)}): every one of its {len(eval_set.rows)} "
                       f"rows is also in the training data ({removed[name]} training rows removed): is it a copy "
                       "of a training file?")
            eval_set.warnings.append(message)
            log.warning(message)
    return removed


def _set_texts(eval_set: EvalSet) -> list[tuple[str, str]]:
    """(file:line, text) of the set's rows, for the n-gram index."""
    out: list[tuple[str, str]] = []
    for table in eval_set.collected.read(eval_set.rows, ["source", "_text"]):
        out.extend(zip(table.column("source").to_pylist(), table.column("_text").to_pylist()))
    return out


def write_sets(sets: dict[str, EvalSet], out: Path, audit: Any) -> dict[str, dict[str, Any]]:
    """data/eval/<name>.parquet for every set (held-out schema), each row counted by the mask audit."""
    from data_prep.audit import count_rows
    from data_prep.shards import output_columns, write_output

    if sets:
        (out / "eval").mkdir(exist_ok=True)
    info: dict[str, dict[str, Any]] = {}
    for name, eval_set in sets.items():
        c = eval_set.collected
        write_output(out / "eval" / f"{name}.parquet", c.read(eval_set.rows, output_columns("heldout")), "heldout",
                     lambda table: count_rows(audit, table))
        info[name] = {"file": f"eval/{name}.parquet", "sources": eval_set.files, "rows_read": c.rows_read,
                      "rows": len(eval_set.rows), "tokens": int(eval_set.tokens[eval_set.rows].sum()),
                      "removed_from_train": eval_set.removed_train, "rows_overlapped_by_train": eval_set.overlapped,
                      "warnings": eval_set.warnings}
    return info
