"""Terminal summary of a prepared data set."""

from __future__ import annotations

from typing import Any

from tailor.runs import run_paths
from tailor.schema import Recipe


def print_summary(recipe: Recipe, manifest: dict[str, Any]) -> None:
    rows, tokens = manifest["rows"], manifest["tokens"]
    paths = run_paths(recipe)
    print(f"data: {rows['read']} rows read -> {rows['train']} train, {rows['heldout']} held-out, "
          f"{rows['rejected']} rejected ({rows['bad']} bad)")
    print(f"      {tokens['train_total']} train tokens, {tokens['train_trained']} trained "
          f"({tokens['train_trained'] / max(tokens['train_total'], 1):.0%}), "
          f"{tokens['train_truncated_rows']} truncated rows")
    for reason, count in sorted(rows["rejected_by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"      rejected {count:5d} x {reason}")
    if rows["rejected"]:
        print(f"      every rejected row, with file and line: {paths.rejected}")
    print(f"      written to {paths.data_dir}")
