"""`python -m data_prep RECIPE [key=value ...] [--force]`: prepare the run's train and held-out data."""

from __future__ import annotations

import argparse

from tailor.cli import recipe_parser, run_cli
from tailor.schema import Recipe


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    from data_prep.prepare import prepare
    from data_prep.report import print_summary
    from tailor.tracking import finish_stage, start_stage

    manifest = prepare(recipe, force=args.force)
    print_summary(recipe, manifest)
    run = start_stage(recipe, "data", {"data_hash": manifest["data_hash"]})
    finish_stage(run, {"rows": manifest["rows"], "tokens": manifest["tokens"]})


def main() -> None:
    parser = recipe_parser("Prepare train and held-out data for a recipe.")
    parser.add_argument("--force", action="store_true", help="prepare again even if the cache is up to date")
    run_cli(stage, parser)


if __name__ == "__main__":
    main()
