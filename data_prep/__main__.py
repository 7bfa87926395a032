"""`python -m data_prep RECIPE [key=value ...] [--force] [--audit]`: prepare the run's train and held-out data."""

from __future__ import annotations

import argparse
import sys

from tailor.cli import recipe_parser, run_cli
from tailor.schema import Recipe


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    from data_prep.prepare import prepare
    from data_prep.report import print_audit, print_summary

    manifest = prepare(recipe, force=args.force)
    print_summary(recipe, manifest)
    if args.audit:
        print_audit(recipe, manifest, samples=args.samples, color=sys.stdout.isatty())
    if not manifest.get("cached"):
        _track(recipe, manifest)


def _track(recipe: Recipe, manifest: dict) -> None:
    """One W&B run (job_type data): counts (the card is logged by finish_stage); raw rows only with log_samples."""
    from tailor.runs import run_paths
    from tailor.tracking import finish_stage, start_stage

    run = start_stage(recipe, "data", {"data_hash": manifest["data_hash"]})
    if run is None:
        return
    import wandb

    paths = run_paths(recipe)  # the data card itself is logged as an artifact by finish_stage
    if recipe.tracking.log_samples:
        from datasets import load_dataset

        first = paths.eval_set_data(recipe.data.set_names()[0])
        rows = load_dataset("parquet", data_files=str(first), split="train").select_columns(
            ["id", "prompt", "reference"]).to_list()[:50]
        run.log({"data/heldout_samples": wandb.Table(columns=["id", "prompt", "reference"],
                                                      data=[[r["id"], r["prompt"], r["reference"]] for r in rows])})
    finish_stage(run, {"rows": manifest["rows"], "tokens": manifest["tokens"], "pii": manifest["pii"],
                       "contamination": manifest["contamination"],
                       "audit": {k: v for k, v in manifest["audit"].items() if k != "problems"}})


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser("Prepare train and held-out data for a recipe.")
    parser.add_argument("--force", action="store_true", help="prepare again even if the cache is up to date")
    parser.add_argument("--audit", action="store_true", help="print the loss-mask audit and highlighted samples")
    parser.add_argument("--samples", type=int, default=2, help="rendered samples to show with --audit")
    run_cli(stage, parser, argv)


if __name__ == "__main__":
    main()
