"""`python -m train RECIPE [key=value ...] [--gpus N] [--strategy S] [--nodes M ...]`: check, then `accelerate launch`.

Refuses what cannot work before any model is loaded. SIGTERM/SIGUSR1 here become a STOP request (checkpoint, exit
75); a failed multi-process run names the stalled rank from the heartbeats. Multi-node: every node runs this on the
shared run folder; node 0's holds the lock and alone clears leftover STOP/PREEMPTED files.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tailor.cli import recipe_parser, run_cli
from tailor.schema import Recipe
from train.checkpoints import PREEMPTED_EXIT_CODE
from train.launch import Launch, check_launch, launch_command, render_profile, resolve_strategy


def launch_from_args(recipe: Recipe, args: argparse.Namespace) -> Launch:
    return Launch(strategy=resolve_strategy(recipe, args.strategy, args.gpus * args.nodes),
                  processes_per_node=args.gpus, nodes=args.nodes, node_rank=args.node_rank,
                  main_ip=args.main_ip, main_port=args.main_port)


def child_env(launch: Launch, gpus_visible: int, launch_dir: Path) -> dict[str, str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TAILOR_STRATEGY": launch.strategy, "TAILOR_LAUNCHER": "1",
           # NCCL flight recorder: on a collective timeout each rank dumps its last collectives here
           "TORCH_NCCL_TRACE_BUFFER_SIZE": os.environ.get("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000"),
           "TORCH_NCCL_DUMP_ON_TIMEOUT": os.environ.get("TORCH_NCCL_DUMP_ON_TIMEOUT", "1"),
           "TORCH_FR_DUMP_TEMP_FILE": str(launch_dir / "nccl_trace_rank_")}
    if not gpus_visible and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.processes_per_node))
    return env


def run_launch(command: list[str], env: dict[str, str], stop_file: Path, clear: bool = True) -> int:
    """Run the launcher in its own process group; SIGTERM/SIGUSR1 here -> STOP file; Ctrl-C -> forwarded."""
    if clear:  # node 0 only: an earlier STOP file may be another node's request
        stop_file.unlink(missing_ok=True)
    child = subprocess.Popen(command, env=env, start_new_session=True)

    def request_stop(signum, frame) -> None:
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.write_text(f"signal {signum}\n")
        print(f"train: got signal {signum}: saving a checkpoint at the end of the current step, then stopping",
              flush=True)

    def interrupt(signum, frame) -> None:
        os.killpg(child.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def explain_failure(code: int, launch_dir: Path) -> str:
    from train.callbacks import read_heartbeats, stalled_ranks

    message = f"training failed (exit code {code})"
    stalled = stalled_ranks(read_heartbeats(launch_dir))
    if stalled:
        message += f"; {stalled} A collective timed out waiting for it (training.collective_timeout_s)"
        traces = sorted(launch_dir.glob("nccl_trace_rank_*"))
        if traces:
            message += f"; NCCL flight-recorder dumps: {', '.join(str(t) for t in traces)}"
    return message + ". The failing rank's own error is above."


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    import torch

    from tailor.contract import check_prepared_data
    from tailor.models import check_target_modules
    from tailor.precision import resolve_precision
    from tailor.runs import run_paths

    from train.init_adapter import init_adapter_record

    paths = run_paths(recipe)
    check_prepared_data(recipe, paths)
    init_adapter_record(recipe)  # a missing or wrong starting adapter, named by its recipe line
    if recipe.training.method == "grpo":
        from train.rewards import check_rewards

        check_rewards(recipe)
    visible = torch.cuda.device_count()
    launch = launch_from_args(recipe, args)
    check_launch(recipe, launch, visible)
    check_target_modules(recipe.model, recipe.peft.target_modules)
    # refuses fp16 on a CPU and warns (once, here) when bf16 is forced on a device without native bf16
    resolve_precision(recipe.training.mixed_precision)
    if visible and not args.no_memory_check:
        _check_memory(recipe, launch, torch.cuda.get_device_properties(0).total_memory / 2**30)
    profile = render_profile(launch, paths)
    command = launch_command(launch, profile, visible, args.recipe, args.overrides)
    print("+ " + " ".join(command), flush=True)
    launch_dir = paths.root / "launch"
    preempted = launch_dir / "PREEMPTED"
    first = launch.node_rank == 0  # the other nodes' launchers leave the shared STOP/PREEMPTED files to node 0
    if first:
        preempted.unlink(missing_ok=True)
    code = run_launch(command, child_env(launch, visible, launch_dir), launch_dir / "STOP", clear=first)
    if preempted.exists():  # the workers exit 0 so that accelerate/torchrun print no failure
        if first:
            preempted.unlink()
        print(f"train: preempted; checkpoint saved. Exit code {PREEMPTED_EXIT_CODE}: run the same command to resume.")
        sys.exit(PREEMPTED_EXIT_CODE)
    if code:
        print(f"error: {explain_failure(code, launch_dir)}", file=sys.stderr)
        sys.exit(code if code > 0 else 1)


def _check_memory(recipe: Recipe, launch: Launch, gpu_mem_gb: float) -> None:
    """Refuse a recipe the memory planner puts far over GPU memory, warn when a little over (`check_fits`)."""
    from train.plan import check_fits

    check_fits(recipe, launch.world_size, gpu_mem_gb, launch.strategy)


def build_parser() -> argparse.ArgumentParser:
    parser = recipe_parser("Fine-tune an adapter with accelerate launch.")
    parser.add_argument("--gpus", type=int, default=int(os.environ.get("GPUS") or 1),
                        help="processes per node (GPUs; CPU processes when no GPU is present)")
    parser.add_argument("--strategy", default=os.environ.get("STRATEGY") or None,
                        help="single | ddp | fsdp | zero2 | zero3 (default: the recipe's training.strategy)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (multi-node: see make slurm)")
    parser.add_argument("--node-rank", type=int, default=0, help="this node's rank (0 = the rendezvous node)")
    parser.add_argument("--main-ip", default=None, help="address of node 0 (multi-node)")
    parser.add_argument("--main-port", type=int, default=29500)
    parser.add_argument("--no-memory-check", action="store_true",
                        default=os.environ.get("TAILOR_NO_MEMORY_CHECK") == "1",
                        help="skip the memory planner's check on GPUs (also TAILOR_NO_MEMORY_CHECK=1)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # node 0's launcher holds the run-folder lock for the whole job; the other nodes join it (train.launch.node_worker)
    node_rank = parser.parse_known_args(argv)[0].node_rank
    run_cli(stage, parser, argv, lock=node_rank == 0)


if __name__ == "__main__":
    main()
