"""Which floating-point precision to compute in, chosen from what the device does fast: measured, not guessed.

CUDA: bf16 from compute capability 8.0, fp16 with loss scaling from 6.0, fp32 below. CPU: bf16 only where a short
matmul probe shows it at least as fast as fp32 (CPU flags are reported, not trusted: VMs lie, oneDNN may ignore them).
The probe is cached per CPU, torch version and kernel environment variables in `$TAILOR_CACHE/hardware/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tailor.lineage import cpu_name

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PrecisionName = Literal["bf16", "fp16", "fp32"]
TORCH_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")
PROBE_SIZE = 512
PROBE_SECONDS = 0.15


@dataclass(frozen=True)
class Precision:
    """A compute precision and why it was chosen (recorded in run.json and the W&B config)."""

    name: PrecisionName
    reason: str
    device: str
    requested: str = "auto"
    slowdown: float | None = None  # measured bf16 time / fp32 time when bf16 is slower here
    measured: str | None = None  # the probe's figures (CPU)

    @property
    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, TORCH_NAMES[self.name])

    def record(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self) -> str:
        return f"precision: {self.name} ({self.reason})"


def cpu_bf16_flags() -> list[str]:
    """The CPU flags that promise native bf16 (avx512_bf16, amx_bf16, amx_tile); empty where none or unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")})


def measure_matmul(dtype: str, size: int = PROBE_SIZE, seconds: float = PROBE_SECONDS, device: str = "cpu") -> float:
    """GFLOP/s of a size^3 matrix product in `dtype` (float32, bfloat16, float16) on `device`, best of a short loop."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device).to(torch_dtype)
    b = torch.randn(size, size, device=device).to(torch_dtype)
    a @ b  # warm-up: oneDNN picks and JIT-compiles its kernel on the first call
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best / 1e9


def _probe_key() -> str:
    import torch

    parts = [cpu_name(), torch.__version__, torch.backends.cpu.get_cpu_capability(),
             str(torch.backends.mkldnn.enabled), *(f"{k}={os.environ.get(k, '')}" for k in KERNEL_ENV)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cpu_matmul_rates(refresh: bool = False) -> dict[str, float]:
    """Measured CPU matmul GFLOP/s for float32 and bfloat16, cached for this CPU, torch and kernel environment."""
    from tailor.runs import atomic_write_json, cache_dir

    path = cache_dir() / "hardware" / f"cpu-matmul-{_probe_key()}.json"
    if not refresh and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            return {"float32": float(cached["float32"]), "bfloat16": float(cached["bfloat16"])}
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache file is measured again
    rates = {dtype: round(measure_matmul(dtype), 1) for dtype in ("float32", "bfloat16")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**rates, "cpu": cpu_name(), "size": PROBE_SIZE})
    except OSError as err:  # a read-only cache costs a second per process, nothing more
        log.debug("cannot cache the matmul probe at %s: %s", path, err)
    return rates


def device_precision() -> Precision:
    """What `auto` picks on this device: the fastest precision it computes natively."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        name = torch.cuda.get_device_name(0)
        device = f"cuda: {name} (compute capability {major}.{minor})"
        if major >= 8:
            return Precision("bf16", f"{name} has native bf16 (compute capability {major}.{minor} >= 8.0)", device)
        if major >= 6:
            return Precision("fp16", f"{name} has no native bf16 (compute capability {major}.{minor} < 8.0): fp16 "
                             "with loss scaling", device)
        return Precision("fp32", f"{name} (compute capability {major}.{minor}) has no fast half precision", device)
    rates = cpu_matmul_rates()
    flags = cpu_bf16_flags()
    fp32, bf16 = rates["float32"], rates["bfloat16"]
    measured = f"bf16 matmul {bf16:g} GFLOP/s vs fp32 {fp32:g}; flags: {', '.join(flags) or 'no bf16 flag'}"
    device = f"cpu: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()})"
    if bf16 >= fp32:
        return Precision("bf16", f"native bf16 on this CPU: {measured}", device, measured=measured)
    slowdown = round(fp32 / bf16, 1)
    return Precision("fp32", f"no native bf16 on this CPU: {measured}; bf16 would be {slowdown:g}x slower",
                     device, slowdown=slowdown, measured=measured)


def resolve_precision(requested: str = "auto", warn: bool = True) -> Precision:
    """The precision a setting (`auto`, `bf16`, `fp16`, `fp32`) gives on this device; warns (with `warn`) when a
    forced choice is slow here and refuses one that cannot run (fp16 autocast on a CPU)."""
    from tailor.errors import TailorError

    best = device_precision()
    if requested == "auto":
        return best
    on_cpu = best.device.startswith("cpu")
    if requested == "fp16" and on_cpu:
        raise TailorError("mixed_precision=fp16 needs a CUDA GPU (fp16 with loss scaling); on a CPU use auto "
                          f"({best.name} here) or fp32.")
    if requested != "bf16" or best.name == "bf16":
        chosen: PrecisionName = requested  # type: ignore[assignment]
        return Precision(chosen, "set by the recipe", best.device, requested, measured=best.measured)
    if warn and on_cpu:
        log.warning("mixed_precision=bf16 on a CPU without native bf16: measured %gx slower than fp32 here (%s). "
                    "Training and generation take about that much longer; set it to auto (fp32 here).",
                    best.slowdown, best.measured)
    elif warn:
        log.warning("mixed_precision=bf16 on %s, which has no native bf16 (emulated or refused); set it to auto "
                    "(%s here).", best.device, best.name)
    return Precision("bf16", "set by the recipe, not native here", best.device, requested, best.slowdown,
                     best.measured)


def generation_dtype(model_dtype: str, precision: Precision) -> str:
    """Weights dtype for eval generation: the recipe's model.dtype, or with `auto` the chosen precision's dtype."""
    return model_dtype if model_dtype != "auto" else TORCH_NAMES[precision.name]
