"""Shared command-line plumbing: `RECIPE [key=value ...]` arguments, logging, and friendly errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.schema import Recipe


def recipe_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser taking a recipe file and `key.path=value` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="overrides such as training.lr=1e-4")
    return parser


def run_cli(stage: Callable[[Recipe, argparse.Namespace], None], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> None:
    """Parse arguments, load the recipe, run `stage`; a TailorError prints its message and exits 2."""
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=os.environ.get("TAILOR_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "wandb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        stage(recipe, args)
    except TailorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def check(recipe: Recipe, args: argparse.Namespace) -> None:
    """Validate the recipe and that every input it names exists, without loading anything heavy."""
    from tailor.models import check_model_source

    for index, source in enumerate(recipe.data.sources):
        if source.path is not None and not Path(source.path).exists():
            raise TailorError(f"{args.recipe}: data.sources[{index}].path: file {source.path} does not exist "
                              f"(paths are relative to the recipe file that names them).")
    if recipe.data.template and not Path(recipe.data.template).is_file():
        raise TailorError(f"{args.recipe}: data.template: file {recipe.data.template} does not exist.")
    check_model_source(recipe.model)
    print(f"{args.recipe}: OK ({recipe.name}: {recipe.model.name_or_path}, {recipe.peft.method}, "
          f"{len(recipe.data.sources)} data source(s), metrics {', '.join(recipe.eval.metrics)})")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "check":
        print("usage: python -m tailor check RECIPE [key=value ...]", file=sys.stderr)
        sys.exit(2)
    run_cli(check, recipe_parser("Validate a recipe without running it."), argv[1:])
