"""Write the planned splits from the shards: train.parquet, then the held-out contamination check, then
heldout.parquet; the mask audit counts every row written and stops the run on a hard problem.

train.parquet's columns depend on training.method (`shards.TRAIN_LAYOUT`): SFT rows, or preference pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.audit import AuditReport, check, count_rows, end_of_turn_token
from data_prep.contamination import HeldoutIndex
from data_prep.eval_sets import write_sets
from data_prep.pairs import PairStats
from data_prep.plan import Collected, Plan
from data_prep.shards import TRAIN_LAYOUT, block_rows, output_columns, write_output
from tailor.schema import Recipe


@dataclass
class Written:
    train_rows: int
    heldout_rows: int
    tokens: dict[str, int]
    contamination: dict[str, Any]
    audit: AuditReport
    eval_sets: dict[str, dict[str, Any]]
    preference: dict[str, Any] | None = None  # pair statistics (dpo, orpo, kto)


def write_splits(recipe: Recipe, tokenizer: Any, collected: Collected, plan: Plan, out: Path,
                 sets: dict[str, Any] | None = None) -> Written:
    """train.parquet, heldout.parquet (empty without a hash split) and data/eval/<name>.parquet."""
    settings = recipe.data.contamination
    audit = AuditReport(end_of_turn=end_of_turn_token(tokenizer)[1],
                        template_mismatches=collected.rejected.mismatches)
    block = block_rows(float(plan.tokens[plan.train].mean()) if len(plan.train) else 1.0)
    index = None
    if settings.enabled and len(plan.train) > 0 and len(plan.heldout) > 0:
        tables = collected.read(plan.heldout, ["id", "_text"], block)
        index = HeldoutIndex(((row["id"], row["_text"]) for table in tables for row in table.to_pylist()),
                             n=settings.ngram)

    layout = TRAIN_LAYOUT[recipe.training.method]
    pairs = PairStats() if layout in ("pairs", "kto") else None

    def count_train(table: Any) -> int:
        if index is not None:
            index.scan(table.column("_text").to_pylist())
        if pairs is not None:
            pairs.add(table)
        return count_rows(audit, table)

    trained = write_output(out / "train.parquet", collected.read(plan.train, output_columns(layout), block), layout,
                           count_train)

    summary = {"enabled": settings.enabled, "ngram": settings.ngram, "threshold": settings.threshold, "removed": 0}
    heldout = plan.heldout
    if index is not None:
        flagged = index.contaminated(settings.threshold)
        if flagged:
            index.start_best(flagged)
            for table in collected.read(plan.train, ["source", "_text"], block):
                index.scan_best(table.column("source").to_pylist(), table.column("_text").to_pylist())
            for row, hit in zip(heldout[flagged].tolist(), index.results(flagged)):
                collected.rejected.add(collected.where(row), "contaminated", "held-out row overlaps a training row",
                                       overlap=round(hit.overlap, 3), train_row=hit.train_key or None)
            summary["removed"] = len(flagged)
            heldout = np.delete(heldout, flagged)

    write_output(out / "heldout.parquet", collected.read(heldout, output_columns("heldout"), block), "heldout",
                 lambda table: count_rows(audit, table))
    eval_sets = write_sets(sets or {}, out, audit)
    check(audit)
    preference = pairs.summary(recipe.training.method, dict(collected.rejected.by_reason)) \
        if pairs is not None else None
    train_rows = preference["desirable"] + preference["undesirable"] if layout == "kto" else len(plan.train)
    return Written(train_rows, len(heldout), {
        "train_total": int(plan.tokens[plan.train].sum()),
        "train_trained": trained,
        "heldout_total": int(plan.tokens[heldout].sum()),
        "train_truncated_rows": int(np.frombuffer(bytes(collected.truncated), dtype=np.uint8)[plan.train].sum()),
    }, summary, audit, eval_sets, preference)
