"""LM head on the trained positions only, on CPUs too (`training.compact_lm_head`).

trl's fused LM head projects only trained positions on Triton devices but every position elsewhere (for Neuron's
sake); on CPUs the head is much of the step, so we patch trl's `trl.trainer.utils._use_triton` to compact on CPU too
and feed its tile function CPU_ROWS rows at a time. Same log-probabilities and gradients (tests/test_packing.py).
If a trl upgrade moves these names, `enable()` says so and training goes on uncompacted.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_tailor_compacts_cpu"
CPU_ROWS = 128  # hidden states per call of trl's log-prob tiles on CPU (see _cpu_row_chunks)


def enable() -> bool:
    """Make trl's fused LM head compact trained positions on CPU too (idempotent); returns whether it is in effect."""
    import trl
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not callable(original):
        log.warning("training.compact_lm_head: this trl version (%s) has no trl.trainer.utils._use_triton; the LM "
                    "head scores every position on CPU", trl.__version__)
        return False
    if not getattr(original, _MARK, False):
        # trl's tile kernels read their own copy (trl.kernels.chunked_logprob): on CPU they stay on the torch path
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
    """trl's chunked log-prob function fed CPU_ROWS independent rows at a time on CPU, so logit tiles stay in cache."""
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

    for name in ("_use_triton", "_ChunkedLogProbFunction"):
        current = getattr(trl_utils, name, None)
        if getattr(current, _MARK, False):
            setattr(trl_utils, name, current.original)


def apply(compact: bool) -> bool:
    """Set the rule for this process from the recipe switch; returns whether CPU compaction is in effect."""
    if compact:
        return enable()
    disable()
    return False
