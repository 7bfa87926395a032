"""`make doctor` (`python -m tailor doctor [RECIPE] [--json]`): this machine, the choices tailor makes on it, and a
few-second measured matmul peak per dtype. The first thing a bug report contains (like `accelerate env`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from tailor.lineage import package_versions
from tailor.precision import cpu_bf16_flags, cpu_name, device_precision, generation_dtype, measure_matmul

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "wandb", "pydantic",
            "numpy", "deepspeed", "liger-kernel", "flash-attn", "vllm", "gguf")
DOCTOR_DTYPES = {"cpu": ("float32", "bfloat16"), "cuda": ("float32", "bfloat16", "float16")}


def machine() -> dict[str, Any]:
    """OS, Python, CPU (model, ISA level torch dispatches to, bf16 flags, cores), memory and GPUs."""
    import torch

    info: dict[str, Any] = {
        "os": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_flags": cpu_bf16_flags() or None,
        "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(), "memory_gib": _memory_gib(),
        "kernel_env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
                                                   "CUDA_VISIBLE_DEVICES") if k in os.environ} or None,
        "cuda": torch.version.cuda, "gpus": [],
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                                 "memory_gib": round(props.total_memory / 2**30, 1)})
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None
        info["driver"] = _nvidia_driver()
    return info


def choices(recipe: Any = None) -> dict[str, Any]:
    """What tailor picks here for the recipe (or the defaults): precision, dtypes, attention, kernels, optimizer."""
    import torch

    from tailor.choices import optimizer_name, use_liger
    from tailor.schema import Recipe

    if recipe is None:
        recipe = Recipe.model_validate({"name": "defaults", "model": {"name_or_path": "-"},
                                        "data": {"sources": [{"path": "-"}]}})
    model, training = recipe.model, recipe.training
    on_gpu = torch.cuda.is_available()
    precision = device_precision()
    generation = generation_dtype(model.dtype, precision)
    return {
        "precision": {"training": precision.name if training.mixed_precision == "auto" else training.mixed_precision,
                      "auto_picks": precision.name, "reason": precision.reason},
        "generation_dtype": generation,
        "attention": model.attn_implementation,
        "liger": use_liger(recipe, on_gpu),
        "optimizer": optimizer_name(recipe, on_gpu),
        "torch_threads": torch.get_num_threads(),
        "compact_lm_head": training.compact_lm_head and not on_gpu,
    }


def matmul_peaks(seconds: float = 0.5) -> dict[str, dict[str, float]]:
    """Measured matmul GFLOP/s per dtype on the CPU (1024^3) and each GPU (8192^3): a few seconds in all."""
    import torch

    peaks = {"cpu": {d: round(measure_matmul(d, 1024, seconds), 1) for d in DOCTOR_DTYPES["cpu"]}}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            peaks[f"cuda:{index}"] = {d: round(measure_matmul(d, 8192, seconds, f"cuda:{index}"), 1)
                                      for d in DOCTOR_DTYPES["cuda"]}
    return peaks


def report(recipe: Any = None, measure: bool = True) -> dict[str, Any]:
    return {"machine": machine(), "packages": package_versions(PACKAGES), "tailor_choices": choices(recipe),
            "matmul_gflops": matmul_peaks() if measure else None}


def format_report(data: dict[str, Any]) -> str:
    lines = []
    for section, body in data.items():
        if body is None:
            continue
        lines.append(f"[{section}]")
        for key, value in body.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, list):
                value = "; ".join(json.dumps(v) if isinstance(v, dict) else str(v) for v in value) or "none"
            lines.append(f"  {key:<18} {value if value is not None else '-'}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tailor doctor", description=__doc__)
    parser.add_argument("recipe", nargs="?", help="show the choices for this recipe (default: tailor's defaults)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-measure", action="store_true", help="skip the matmul peaks (the probe still runs)")
    args = parser.parse_args(argv)
    recipe = None
    if args.recipe:
        from tailor.recipe import load_recipe

        recipe = load_recipe(args.recipe, [])
    data = report(recipe, measure=not args.no_measure)
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    sys.stdout.flush()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
        return round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None
