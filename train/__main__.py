"""`python -m train RECIPE [key=value ...] [--gpus N]`: check inputs, then `accelerate launch` the trainer."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.schema import Recipe


def launch_command(args: argparse.Namespace, gpus_visible: int) -> list[str]:
    """The `accelerate launch` command line for N processes (GPUs when present, else CPU processes with gloo)."""
    processes = args.gpus
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
               "--num_processes", str(processes), "--dynamo_backend", "no", "--mixed_precision", "no"]
    if processes > 1:
        command.append("--multi_gpu")  # torchrun-style launcher; without GPUs each process uses gloo on CPU
    elif gpus_visible == 0:
        command.append("--cpu")
    command += ["-m", "train.run", args.recipe, *args.overrides]
    return command


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    import torch

    from data_prep.prepare import check_prepared_data
    from tailor.runs import run_paths

    check_prepared_data(recipe, run_paths(recipe))
    visible = torch.cuda.device_count()
    if args.gpus < 1:
        raise TailorError(f"GPUS={args.gpus}: need at least one process.")
    if visible and args.gpus > visible:
        raise TailorError(f"GPUS={args.gpus} but only {visible} GPU(s) are visible; use GPUS={visible} or fewer.")
    command = launch_command(args, visible)
    print("+ " + " ".join(command), flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    code = subprocess.call(command, env=env)
    if code:
        sys.exit(code)


def main() -> None:
    parser = recipe_parser("Fine-tune an adapter with accelerate launch.")
    parser.add_argument("--gpus", type=int, default=int(os.environ.get("GPUS") or 1),
                        help="number of processes (GPUs; CPU processes when no GPU is present)")
    run_cli(stage, parser)


if __name__ == "__main__":
    main()
