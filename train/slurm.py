"""`python -m train.slurm RECIPE --nodes N --gpus-per-node G [--strategy S] [--submit]`: a SLURM batch script.

One task per node runs the same `python -m train` launcher as `make train`, with node 0 as the rendezvous point.
SLURM sends SIGUSR1 two minutes before the time limit; tailor saves a checkpoint and exits 75, and the script
requeues the job, which resumes from that checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.runs import atomic_write_text, run_paths
from tailor.schema import Recipe
from train.checkpoints import PREEMPTED_EXIT_CODE
from train.launch import Launch, check_launch, resolve_strategy

TEMPLATE = """#!/bin/bash
# Rendered by `make slurm` for recipe {recipe} ({nodes} node(s) x {gpus} GPU(s), strategy {strategy}).
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --output={log_dir}/slurm-%j.out
{extra}
set -uo pipefail
cd {workdir}
export MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export NCCL_ASYNC_ERROR_HANDLING=1

# one launcher per node; each starts {gpus} training processes with accelerate launch
srun --kill-on-bad-exit=1 bash -c '{python} -m train {recipe_q} {overrides}--gpus {gpus} --nodes {nodes} \\
    --node-rank $SLURM_NODEID --main-ip $MAIN_IP --main-port {port}{strategy_flag}'
code=$?
if [ "$code" -eq {preempted} ]; then
  echo "preempted: checkpoint saved; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$code"
"""


def render(recipe: Recipe, recipe_arg: str, overrides: list[str], launch: Launch, time_limit: str,
           cpus_per_task: int, extra: list[str]) -> str:
    paths = run_paths(recipe)
    return TEMPLATE.format(
        recipe=recipe_arg, recipe_q=shlex.quote(recipe_arg), name=recipe.name, nodes=launch.nodes,
        gpus=launch.processes_per_node, strategy=launch.strategy, cpus=cpus_per_task, time=time_limit,
        log_dir=(paths.root / "launch").resolve(), workdir=Path.cwd().resolve(), python=sys.executable,
        overrides="".join(shlex.quote(o) + " " for o in overrides), port=launch.main_port,
        strategy_flag=f" --strategy {launch.strategy}", preempted=PREEMPTED_EXIT_CODE,
        extra="\n".join(f"#SBATCH {line}" for line in extra))


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    strategy = resolve_strategy(recipe, args.strategy, args.gpus_per_node * args.nodes)
    launch = Launch(strategy, args.gpus_per_node, nodes=args.nodes, main_ip="$MAIN_IP", main_port=args.main_port)
    check_launch(recipe, launch, gpus_visible=args.gpus_per_node)  # the GPUs of a compute node, not of this one
    script = render(recipe, args.recipe, args.overrides, launch, args.time, args.cpus_per_task, args.sbatch)
    target = run_paths(recipe).root / "launch" / "train.sbatch"
    atomic_write_text(target, script)
    print(script)
    print(f"# written to {target}")
    if args.submit:
        try:
            subprocess.run(["sbatch", str(target)], check=True)
        except FileNotFoundError:
            raise TailorError("sbatch not found: run `make slurm SUBMIT=1` on the cluster's login node.") from None


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser("Render (and optionally submit) a SLURM batch script for multi-node training.")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--strategy", default=None, help="single | ddp | fsdp | zero2 | zero3")
    parser.add_argument("--time", default="24:00:00", help="SLURM time limit")
    parser.add_argument("--cpus-per-task", type=int, default=32)
    parser.add_argument("--main-port", type=int, default=29500)
    parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH line, e.g. --partition=gpu")
    parser.add_argument("--submit", action="store_true", help="run sbatch on the rendered script")
    run_cli(stage, parser, argv)


if __name__ == "__main__":
    main()
