"""LM head on the trained positions only, on CPUs too (`training.compact_lm_head`).

trl's fused LM head (installed by `SFTTrainer`) projects hidden states through the vocabulary in tiles and never
builds the full logits. On Triton devices (CUDA, XPU) it projects only the positions whose label is trained; elsewhere
it projects every position, a choice made for Neuron, where a varying number of rows recompiles the graph. CPU eager
mode has no such cost, and on CPUs the head is much of the step (a 151,936-token vocabulary: ~90% of the FLOPs of
the tiny bench model, ~28% of Qwen2.5-0.5B's), so with prompts untrained this skips a large share of the work.

trl reads the decision from one module-level function, `trl.trainer.utils._use_triton(device)`, at every forward;
the tile kernels read their own copy (in `trl.kernels.chunked_logprob`), so they stay on the torch path on CPU.
On CPU the compacted rows are also fed to trl's tile function in chunks of CPU_ROWS, so its element-wise passes
over [rows, 32768] logit tiles stay in the caches (`_cpu_row_chunks`). Same log-probabilities and gradients
(tests/test_packing.py checks compact + chunked against full). Pinned to trl's layout (trl is pinned exactly): if
an upgrade moves these names, `enable()` says so and training goes on uncompacted.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_tailor_compacts_cpu"
CPU_ROWS = 128  # hidden states per call of trl's log-prob tiles on CPU (see _cpu_row_chunks)


def enable() -> bool:
    """Make trl's fused LM head compact the trained positions on CPU as it does on GPUs. Idempotent; returns
    whether compaction on CPU is in effect."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not callable(original):
        log.warning("training.compact_lm_head: this trl version (%s) has no trl.trainer.utils._use_triton; the LM "
                    "head scores every position on CPU", _trl_version())
        return False
    if not getattr(original, _MARK, False):
        def compact_on_cpu_too(device: Any) -> bool:
            return device.type == "cpu" or original(device)

        setattr(compact_on_cpu_too, _MARK, True)
        compact_on_cpu_too.original = original  # type: ignore[attr-defined]
        trl_utils._use_triton = compact_on_cpu_too
    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if function is not None and not getattr(function, _MARK, False):
        trl_utils._ChunkedLogProbFunction = _cpu_row_chunks(function)
    return True


def _cpu_row_chunks(function: Any) -> Any:
    """trl's chunked log-prob function, fed at most CPU_ROWS hidden states at a time on CPU.

    Its torch (non-Triton) path makes about ten element-wise passes over each [rows, 32768] float tile of logits;
    at 1,500 rows a tile is 200 MB and every pass goes to DRAM, at 128 rows 17 MB (`make bench`, tiny model, 2 cores:
    ~360 -> ~490 tokens/s, peak RSS 2.1 -> 1.5 GB). The rows are independent, so the outputs are the concatenated
    chunks (autograd sums the LM head's gradient)."""
    import torch

    class CpuRowChunked:
        original = function

        @staticmethod
        def apply(hidden: Any, weight: Any, bias: Any, targets: Any, *rest: Any) -> Any:
            rows = CPU_ROWS
            if hidden.device.type != "cpu" or hidden.shape[0] <= rows:
                return function.apply(hidden, weight, bias, targets, *rest)
            parts = [function.apply(hidden[i:i + rows], weight, bias, targets[i:i + rows], *rest)
                     for i in range(0, hidden.shape[0], rows)]
            return tuple(None if part[0] is None else torch.cat(list(part))
                         for part in zip(*parts))

    setattr(CpuRowChunked, _MARK, True)
    return CpuRowChunked


def disable() -> None:
    """Undo `enable()` (trl's own rule again: every position on CPU)."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if getattr(current, _MARK, False):
        trl_utils._use_triton = current.original
    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if getattr(function, _MARK, False):
        trl_utils._ChunkedLogProbFunction = function.original


def apply(compact: bool) -> bool:
    """Set the rule for this process from the recipe switch; returns whether CPU compaction is in effect."""
    if compact:
        return enable()
    disable()
    return False


def _trl_version() -> str:
    try:
        import trl

        return trl.__version__
    except ImportError:  # pragma: no cover
        return "?"
