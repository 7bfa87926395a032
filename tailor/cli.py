"""Shared command-line plumbing: `RECIPE [key=value ...]` arguments, logging, and friendly errors."""

from __future__ import annotations

import argparse
import errno
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
            argv: list[str] | None = None, lock: bool = True) -> None:
    """Parse arguments, load the recipe, run `stage` (holding the run folder's lock unless `lock` is False, for
    read-only commands); a TailorError or a full disk prints its message and exits 2."""
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=os.environ.get("TAILOR_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "wandb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # bitsandbytes tries an optional CPU 4-bit kernel fetched from the hub (`kernels` package) and falls back to its
    # own when absent, as it always is offline; its warning asks users to install something they must not need.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        check_recipe_files(recipe, args.recipe, args.overrides)
        if not lock:
            stage(recipe, args)
            return
        from tailor.locks import run_lock
        from tailor.runs import run_paths

        with run_lock(run_paths(recipe).root):
            stage(recipe, args)
    except TailorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - only a full disk is turned into a message; anything else is a bug
        full = disk_full(err)
        if full is None:
            raise
        print(f"error: the disk is full ({full}). Free some space (or point output_dir / TAILOR_CACHE elsewhere) "
              "and run the same command again: files written before are intact, every tailor output is written "
              "whole or not at all.", file=sys.stderr)
        sys.exit(2)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large", "StorageFull",
                   "file write failed", "ENOSPC")


def disk_full(err: BaseException) -> str | None:
    """A description when `err` (or an exception it wraps) is a full disk or quota, else None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            where = f" writing {current.filename}" if current.filename else ""
            return f"{current.strerror}{where}"
        text = str(current)
        if any(t in text for t in DISK_FULL_TEXTS):
            return text.strip().splitlines()[0][:300]
        current = current.__cause__ or current.__context__
    return None


def check_recipe_files(recipe: Recipe, recipe_arg: str, overrides: list[str]) -> None:
    """The chat template must come from inside the project (the working directory), the recipe's folder, or the
    command line itself (`data.template=PATH`), so a recipe from elsewhere cannot make tailor read arbitrary files."""
    template = recipe.data.template
    if not template or any(item.split("=", 1)[0].strip() == "data.template" for item in overrides):
        return
    resolved = Path(template).resolve()
    allowed = [Path.cwd().resolve(), Path(recipe_arg).resolve().parent]
    if not any(resolved == root or root in resolved.parents for root in allowed):
        raise TailorError(f"{recipe_arg}: data.template: {resolved} is outside the project ({allowed[0]}) and the "
                          "recipe's folder; templates are only read from there. Copy it into the project, or pass it "
                          "yourself on the command line: data.template=PATH.")


def check(recipe: Recipe, args: argparse.Namespace) -> None:
    """Validate the recipe and that every input it names exists, without loading anything heavy."""
    from tailor.models import check_model_source, check_target_modules, check_weight_files, looks_local, model_source

    lists = {"data.sources": recipe.data.sources,
             **{f"data.eval_sets.{name}": sources for name, sources in recipe.data.eval_sets.items()}}
    for key, sources in lists.items():
        for index, source in enumerate(sources):
            if source.path is not None and not Path(source.path).exists():
                raise TailorError(f"{args.recipe}: {key}[{index}].path: file {source.path} does not exist "
                                  "(paths are relative to the recipe file that names them).")
    if recipe.data.template and not Path(recipe.data.template).is_file():
        raise TailorError(f"{args.recipe}: data.template: file {recipe.data.template} does not exist.")
    check_model_source(recipe.model)
    if looks_local(recipe.model.name_or_path) or recipe.model.gguf_file:
        source = model_source(recipe.model)
        check_weight_files(recipe.model, source)
        check_target_modules(recipe.model, recipe.peft.target_modules)
    method = recipe.training.method
    if recipe.grpo is not None:
        method += " rewarding " + " + ".join(f"{r.weight:g} x {r.name}" for r in recipe.grpo.rewards)
    if recipe.init_adapter_dir:
        method += f" from {recipe.init_adapter_dir}"  # checked by `make train` (it may not be trained yet)
    print(f"{args.recipe}: OK ({recipe.name}: {recipe.model.name_or_path}, {recipe.peft.method}, {method}, "
          f"{len(recipe.data.sources)} data source(s), metrics {', '.join(recipe.eval.metrics)})")


# `tailor SUB ...`: each stage's own entry point, imported only when chosen (module, function, one line of help)
COMMANDS = {
    "check": ("tailor.cli", "check_main", "validate a recipe and its inputs without running anything"),
    "doctor": ("tailor.doctor", "main", "this machine, its packages and the choices tailor makes on it"),
    "data": ("data_prep.__main__", "main", "prepare the train and held-out data into runs/<name>/data"),
    "audit": ("data_prep.__main__", "main", "prepare (cached) and show the loss-mask audit (data --audit)"),
    "train": ("train.__main__", "main", "fine-tune the adapter (accelerate launch; --gpus N, --strategy S)"),
    "plan": ("train.plan", "main", "estimate per-device memory and the largest micro batch"),
    "merge": ("train.merge", "main", "merge the adapter into the base model"),
    "slurm": ("train.slurm", "main", "render (and optionally submit) a SLURM batch script"),
    "eval": ("eval.__main__", "main", "evaluate base vs tuned on every eval set (--gate: exit 3 on HOLD)"),
    "compare": ("tailor.compare", "main", "compare run folders: terminal table and compare.html"),
}


def usage() -> str:
    lines = "\n".join(f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (f"usage: tailor COMMAND [RECIPE] [key=value ...] [options]\n\ncommands:\n{lines}\n\n"
            "`tailor COMMAND --help` shows a command's options.")


def check_main(argv: list[str] | None = None) -> None:
    run_cli(check, recipe_parser("Validate a recipe without running it."), argv, lock=False)


def main(argv: list[str] | None = None) -> None:
    """`tailor COMMAND ...` (also `python -m tailor COMMAND ...`): dispatch to the stage's entry point."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if not argv or argv[0] not in COMMANDS:
        unknown = f"tailor: unknown command {argv[0]!r}\n" if argv else ""
        print(unknown + usage(), file=sys.stderr)
        sys.exit(2)
    name, rest = argv[0], argv[1:] + (["--audit"] if argv[0] == "audit" else [])
    module, function, _ = COMMANDS[name]
    entry = getattr(importlib.import_module(module), function)
    saved, sys.argv = sys.argv, [f"tailor {name}", *rest]  # argparse's usage names the command
    try:
        entry(rest)
    finally:
        sys.argv = saved
