"""Launch profiles: choose and check a strategy, render its Accelerate config, build the `accelerate launch` line.

Runs before any model is loaded, so a launch that cannot work is refused in seconds with a fix. The chosen profile
(`train/profiles/`) is copied into the run folder as its record. `python -m train.launch RECIPE` is the training
process of nodes other than 0: `train.run` without the run-folder lock, which node 0's launcher holds.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tailor.errors import TailorError
from tailor.recipe import origin
from tailor.runs import RunPaths, atomic_write_text
from tailor.schema import Recipe

PROFILES = Path(__file__).resolve().parent / "profiles"
STRATEGIES = ("single", "ddp", "fsdp", "zero2", "zero3")


@dataclass(frozen=True)
class Launch:
    """Where and how the training processes run."""

    strategy: str
    processes_per_node: int
    nodes: int = 1
    node_rank: int = 0
    main_ip: str | None = None
    main_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes


def resolve_strategy(recipe: Recipe, requested: str | None, processes: int) -> str:
    """STRATEGY= on the command line, else the recipe's; auto = single for one process, ddp for more."""
    strategy = requested or recipe.training.strategy
    if strategy == "auto":
        return "single" if processes == 1 else "ddp"
    if strategy not in STRATEGIES:
        raise TailorError(f"STRATEGY={strategy}: unknown; choose one of {', '.join(STRATEGIES)}.")
    return strategy


def check_launch(recipe: Recipe, launch: Launch, gpus_visible: int) -> None:
    """Refuse launches that cannot work here, naming the reason and the fix (nothing heavy is loaded)."""
    s, n = launch.strategy, launch.processes_per_node
    if n < 1 or launch.nodes < 1:
        raise TailorError(f"GPUS={n} NODES={launch.nodes}: need at least one process on at least one node.")
    if not 0 <= launch.node_rank < launch.nodes:
        raise TailorError(f"--node-rank {launch.node_rank}: NODES={launch.nodes} are numbered 0 to {launch.nodes - 1}.")
    if launch.nodes > 1 and not launch.main_ip:
        raise TailorError(f"NODES={launch.nodes} needs the address of node 0 (--main-ip); `make slurm` fills it in.")
    if gpus_visible and n > gpus_visible:
        raise TailorError(f"GPUS={n} but only {gpus_visible} GPU(s) are visible on this node; use GPUS={gpus_visible} "
                          "or fewer (or check CUDA_VISIBLE_DEVICES).")
    if s == "single" and launch.world_size > 1:
        raise TailorError(f"STRATEGY=single runs one process but GPUS={n} NODES={launch.nodes}; use STRATEGY=ddp "
                          "(or fsdp/zero2/zero3) for several.")
    if s.startswith("zero"):
        if not gpus_visible:
            raise TailorError(f"STRATEGY={s} (DeepSpeed) needs CUDA GPUs and none is visible; on CPU use "
                              "STRATEGY=ddp or STRATEGY=fsdp.")
        if importlib.util.find_spec("deepspeed") is None:
            raise TailorError(f"STRATEGY={s} needs DeepSpeed: `.venv/bin/pip install deepspeed`, or use STRATEGY=fsdp "
                              "(FSDP2 shards the same way and ships with torch).")
        if recipe.training.optim.startswith("paged_"):
            raise TailorError(f"training.optim={recipe.training.optim} is a bitsandbytes paged optimizer, which "
                              f"DeepSpeed ({s}) does not drive; use training.optim=auto or adamw_torch.")
    if recipe.training.method == "grpo":
        group = recipe.grpo.num_generations
        batch = recipe.training.batch_size * recipe.training.grad_accum * launch.world_size
        if batch % group:
            raise TailorError(f"{origin(recipe, 'grpo.num_generations')}: grpo.num_generations={group}: GRPO scores groups of answers to one prompt, so the "
                              f"answers generated per optimizer step (training.batch_size x training.grad_accum x "
                              f"{launch.world_size} process(es) = {batch}) must be a multiple of it; e.g. "
                              f"training.batch_size={group}.")
    if recipe.peft.method == "qlora" and s in ("fsdp", "zero3"):
        if recipe.model.dtype == "float16":
            raise TailorError(f"QLoRA with STRATEGY={s} shards the 4-bit weights stored as the compute dtype; "
                              "model.dtype=float16 overflows in practice: use model.dtype=bfloat16 (or auto).")
        if s == "zero3" and not gpus_visible:
            raise TailorError("QLoRA with ZeRO-3 needs CUDA GPUs (bitsandbytes + DeepSpeed); use STRATEGY=fsdp.")
    if recipe.training.torch_compile and s.startswith("zero"):
        raise TailorError(f"training.torch_compile with STRATEGY={s} is not supported by tailor; use fsdp or ddp.")


def render_profile(launch: Launch, paths: RunPaths) -> Path:
    """Copy the strategy's Accelerate config into the run folder with absolute paths and this launch's sizes."""
    config = yaml.safe_load((PROFILES / f"{launch.strategy}.yaml").read_text(encoding="utf-8"))
    config["num_processes"] = launch.world_size
    config["num_machines"] = launch.nodes
    ds = config.get("deepspeed_config", {})
    if "deepspeed_config_file" in ds:
        ds["deepspeed_config_file"] = str(PROFILES / Path(ds["deepspeed_config_file"]).name)
    # every node renders its own file: the run folder is shared, and node 0's accelerate.yaml is the record
    name = "accelerate.yaml" if launch.node_rank == 0 else f"accelerate.node{launch.node_rank}.yaml"
    target = paths.root / "launch" / name
    atomic_write_text(target, f"# rendered by tailor from train/profiles/{launch.strategy}.yaml\n"
                      + yaml.safe_dump(config, sort_keys=False))
    return target


def launch_command(launch: Launch, profile: Path, gpus_visible: int, recipe_arg: str,
                   overrides: list[str]) -> list[str]:
    """`accelerate launch` with the profile, sizes and rendezvous (torchrun; `--cpu` only for one CPU process)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(profile),
               "--num_processes", str(launch.world_size), "--num_machines", str(launch.nodes)]
    if launch.nodes > 1:
        command += ["--machine_rank", str(launch.node_rank), "--main_process_ip", str(launch.main_ip),
                    "--main_process_port", str(launch.main_port)]
    if launch.strategy == "single" and not gpus_visible:
        command.append("--cpu")
    worker = "train.run" if launch.node_rank == 0 else "train.launch"  # see node_worker
    return command + ["-m", worker, recipe_arg, *overrides]


def node_worker(argv: list[str] | None = None) -> None:
    """`train.run` on a node other than 0, taking no lock: node 0's launcher holds it for the shared run folder."""
    from tailor.cli import recipe_parser, run_cli
    from train.run import stage

    run_cli(stage, recipe_parser("Fine-tune an adapter: one training process of a node other than 0."), argv,
            lock=False)


if __name__ == "__main__":
    node_worker()
