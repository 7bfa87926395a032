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
        run.log(flat)
        finish_stage(run, flat)


def main() -> None:
    parser = recipe_parser("Evaluate base and tuned model on the held-out set.")
    parser.add_argument("--adapter", help="adapter folder to evaluate (default: the run's adapter/)")
    run_cli(stage, parser)


if __name__ == "__main__":
    main()
