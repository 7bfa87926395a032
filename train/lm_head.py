"""LM head on the trained positions only, on CPUs too (`training.compact_lm_head`).

trl's fused LM head (installed by `SFTTrainer`) projects hidden states through the vocabulary in tiles and never
builds the full logits. On Triton devices (CUDA, XPU) it projects only the positions whose label is trained; elsewhere
it projects every position, a choice made for Neuron, where a varying number of rows recompiles the graph. CPU eager
mode has no such cost, and on CPUs the head is much of the step (a 151,936-token vocabulary: ~90% of the FLOPs of
the tiny bench model, ~28% of Qwen2.5-0.5B's), so with prompts untrained this skips a large share of the work.

trl reads the decision from one module-level function, `trl.trainer.utils._use_triton(device)`, at every forward;
the tile kernels read their own copy (in `trl.kernels.chunked_logprob`), so they stay on the torch path on CPU.
The results are the same log-probabilities (tests/test_packing.py checks compact against full). Pinned to trl's
layout: if a trl upgrade moves that function, `enable()` reports it and training goes on uncompacted.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_tailor_compacts_cpu"


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
    if getattr(original, _MARK, False):
        return True

    def compact_on_cpu_too(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    setattr(compact_on_cpu_too, _MARK, True)
    compact_on_cpu_too.original = original  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu_too
    return True


def disable() -> None:
    """Undo `enable()` (trl's own rule again: every position on CPU)."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if getattr(current, _MARK, False):
        trl_utils._use_triton = current.original


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
