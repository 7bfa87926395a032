"""What the eval cost: generated tokens per second per variant, GPU-hours and CPU-hours of the whole stage."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CostMeter:
    """Started when the stage starts; `summary` reads wall time and this process's CPU time (all threads)."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)

    def summary(self, gpus: int, generation: dict[str, dict[str, float]]) -> dict[str, Any]:
        """`generation`: per variant {"tokens", "seconds"}. GPU-hours = wall seconds x GPUs / 3600 (0 on CPU)."""
        wall = time.perf_counter() - self.wall_start
        cpu = time.process_time() - self.cpu_start
        per_variant = {name: {"generated_tokens": int(g["tokens"]), "generation_seconds": round(g["seconds"], 3),
                              "tokens_per_second": round(g["tokens"] / g["seconds"], 2) if g["seconds"] > 0 else None}
                       for name, g in generation.items()}
        return {"wall_seconds": round(wall, 2), "gpus": gpus, "gpu_hours": round(wall * gpus / 3600, 6),
                "cpu_seconds": round(cpu, 2), "cpu_hours": round(cpu / 3600, 6),
                "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "generation": per_variant}


def gpus_used(model: Any) -> int:
    """GPUs the model's weights sit on (0 on CPU)."""
    devices = {p.device for p in model.parameters()}
    return len({d.index for d in devices if d.type == "cuda"})
