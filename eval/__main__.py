"""`python -m eval RECIPE [key=value ...] [--adapter DIR]`: held-out evaluation, base vs tuned."""

from __future__ import annotations

import argparse
from pathlib import Path

from tailor.cli import recipe_parser, run_cli
from tailor.schema import Recipe


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    from eval.run import evaluate, format_table
    from tailor.runs import run_paths
    from tailor.tracking import finish_stage, start_stage

    results = evaluate(recipe, Path(args.adapter) if args.adapter else None)
    print(f"eval on {results['rows']} held-out rows ({run_paths(recipe).results}):")
    print(format_table(results))
    run = start_stage(recipe, "eval", {"data_hash": results["hashes"]["data"]})
    if run is not None:
        flat = {f"eval/{variant}/{key}": value for variant, metrics in results["models"].items()
                for key, value in metrics.items() if isinstance(value, (int, float))}
        flat.update({f"eval/delta/{key}": value for key, value in results.get("delta", {}).items()})
        for metric, c in results.get("comparisons", {}).items():
            flat.update({f"eval/ci/{metric}/low": c["ci_low"], f"eval/ci/{metric}/high": c["ci_high"],
                         f"eval/ci/{metric}/excludes_zero": int(c["excludes_zero"])})
        if recipe.tracking.log_samples:
            _log_predictions(run, run_paths(recipe).predictions)
        run.log(flat)
        finish_stage(run, flat)


def _log_predictions(run, path: Path) -> None:
    """A W&B table of held-out predictions: only with tracking.log_samples (it holds customer text)."""
    import json

    import wandb

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    columns = ["id", "prompt", "reference", "base", "tuned"]
    run.log({"eval/predictions": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})


def main() -> None:
    parser = recipe_parser("Evaluate base and tuned model on the held-out set.")
    parser.add_argument("--adapter", help="adapter folder to evaluate (default: the run's adapter/)")
    run_cli(stage, parser)


if __name__ == "__main__":
    main()
