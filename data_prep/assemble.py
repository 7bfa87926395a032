"""Write the planned splits from the shards: train.parquet, then the held-out contamination check, then
heldout.parquet; the mask audit counts every row written and stops the run on a hard problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_prep.audit import AuditReport, check, count_rows, end_of_turn_token
from data_prep.contamination import HeldoutIndex
from data_prep.eval_sets import write_sets
from data_prep.plan import Collected, Plan
from data_prep.shards import WORK_COLUMNS, block_rows, output_schema, read_planned, to_output
from tailor.schema import Recipe



@dataclass
class Written:
    train_rows: int
    heldout_rows: int
    tokens: dict[str, int]
    contamination: dict[str, Any]
    audit: AuditReport
    eval_sets: dict[str, dict[str, Any]]


def write_splits(recipe: Recipe, tokenizer: Any, collected: Collected, plan: Plan, out: Path,
                 sets: dict[str, Any] | None = None) -> Written:
    """train.parquet, heldout.parquet (the hash split, empty without one) and data/eval/<name>.parquet for the
    named sets (`data_prep.eval_sets`)."""
    settings = recipe.data.contamination
    audit = AuditReport(end_of_turn=end_of_turn_token(tokenizer)[1],
                        template_mismatches=collected.rejected.mismatches)
    shards, position = np.asarray(collected.shard, dtype=np.int64), np.asarray(collected.position, dtype=np.int64)

    block = block_rows(float(plan.tokens[plan.train].mean()) if len(plan.train) else 1.0)

    def planned(rows: np.ndarray, columns: list[str]):
        return read_planned(collected.shards, shards[rows], position[rows], columns, block)

    check_contamination = settings.enabled and len(plan.train) > 0 and len(plan.heldout) > 0
    index = None
    if check_contamination:
        index = HeldoutIndex(((row["id"], row["_text"]) for table in planned(plan.heldout, ["id", "_text"])
                              for row in table.to_pylist()), n=settings.ngram)
    schema = output_schema(heldout=False)
    columns = [f.name for f in schema] + WORK_COLUMNS
    trained = 0
    with pq.ParquetWriter(out / "train.parquet", schema) as writer:
        for table in planned(plan.train, columns):
            trained += count_rows(audit, table)
            if index is not None:
                index.scan(table.column("_text").to_pylist())
            writer.write_table(to_output(table, schema))

    summary = {"enabled": settings.enabled, "ngram": settings.ngram, "threshold": settings.threshold, "removed": 0}
    heldout = plan.heldout
    if index is not None:
        flagged = index.contaminated(settings.threshold)
        if flagged:
            index.start_best(flagged)
            for table in planned(plan.train, ["source", "_text"]):
                index.scan_best(table.column("source").to_pylist(), table.column("_text").to_pylist())
            for row, hit in zip(heldout[flagged].tolist(), index.results(flagged)):
                collected.rejected.add(collected.where(row), "contaminated", "held-out row overlaps a training row",
                                       overlap=round(hit.overlap, 3), train_row=hit.train_key or None)
            summary["removed"] = len(flagged)
            heldout = np.delete(heldout, flagged)

    schema = output_schema(heldout=True)
    columns = [f.name for f in schema] + WORK_COLUMNS
    with pq.ParquetWriter(out / "heldout.parquet", schema) as writer:
        for table in planned(heldout, columns):
            count_rows(audit, table)
            writer.write_table(to_output(table, schema))
    eval_sets = write_sets(sets or {}, out, audit)
    check(audit)
    tokens = plan.tokens
    return Written(len(plan.train), len(heldout), {
        "train_total": int(tokens[plan.train].sum()),
        "train_trained": trained,
        "heldout_total": int(tokens[heldout].sum()),
        "train_truncated_rows": int(np.frombuffer(bytes(collected.truncated), dtype=np.uint8)[plan.train].sum()),
    }, summary, audit, eval_sets)
