"""Terminal summary of a prepared data set."""

from __future__ import annotations

from typing import Any

from tailor.runs import run_paths
from tailor.schema import HASH_SPLIT_SET, Recipe


def print_summary(recipe: Recipe, manifest: dict[str, Any]) -> None:
    rows, tokens = manifest["rows"], manifest["tokens"]
    paths = run_paths(recipe)
    named = sum(info["rows"] for name, info in manifest.get("eval_sets", {}).items() if name != HASH_SPLIT_SET)
    sides = [f"{rows['train']} train"] + ([f"{rows['heldout']} held-out"] if recipe.data.hash_split else []) + \
        ([f"{named} in named eval sets"] if recipe.data.eval_sets else [])
    print(f"data: {rows['read']} rows read -> {', '.join(sides)}, {rows['rejected']} rejected ({rows['bad']} bad)")
    print(f"      {tokens['train_total']} train tokens, {tokens['train_trained']} trained "
          f"({tokens['train_trained'] / max(tokens['train_total'], 1):.0%}), "
          f"{tokens['train_truncated_rows']} truncated rows")
    pairs = manifest.get("preference")
    if pairs:
        share = pairs["chosen_longer_share"]
        print(f"      {pairs['pairs']} preference pairs" + (f", chosen longer in {share:.0%}" if share is not None
                                                            else "")
              + (f"; kto: {pairs['desirable']} desirable, {pairs['undesirable']} undesirable"
                 if "desirable" in pairs else ""))
    for set_name, info in manifest.get("eval_sets", {}).items():
        removed = info.get("removed_from_train")
        print(f"      eval set {set_name}: {info['rows']} rows ({info['file']})"
              + (f", {removed} overlapping training rows removed" if removed else ""))
    for warning in manifest.get("warnings", []):
        print(f"      warning: {warning}")
    for reason, count in sorted(rows["rejected_by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"      rejected {count:5d} x {reason}")
    if rows["rejected"]:
        print(f"      every rejected row, with file and line: {paths.rejected}")
    print(f"      written to {paths.data_dir}")


def print_audit(recipe: Recipe, manifest: dict[str, Any], samples: int = 2, color: bool = True) -> None:
    """The mask audit from the manifest, then a few training rows with the trained tokens highlighted."""
    from datasets import load_dataset

    from data_prep.audit import AuditReport, format_report, highlight, highlight_pair
    from tailor.models import load_tokenizer

    audit = manifest["audit"]
    report = AuditReport(rows=audit["rows"], end_of_turn=audit["end_of_turn"],
                         end_of_turn_trained=audit["end_of_turn_trained"])
    report.tokens_by_role.update(audit["tokens_by_role"])
    report.trained_by_role.update(audit["trained_by_role"])
    print(format_report(report))
    tokenizer = load_tokenizer(recipe.model)
    rows = load_dataset("parquet", data_files=str(run_paths(recipe).train_data), split="train")
    legend = "bright green = trained" if color else "[[...]] = trained"
    show = highlight_pair if "prompt_ids" in rows.column_names else highlight
    for row in rows.select(range(min(samples, len(rows)))):
        print(f"--- sample {row['id']} ({row['source']}), {legend}")
        print(show(row, tokenizer, color=color))
