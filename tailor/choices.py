"""Optimizer and fused kernels tailor picks for a recipe on this device (used by train and by `make doctor`)."""

from __future__ import annotations

import importlib.util

from tailor.errors import TailorError
from tailor.schema import Recipe


def optimizer_name(recipe: Recipe, on_gpu: bool, strategy: str = "single") -> str:
    """auto: fused AdamW (one kernel for all LoRA tensors); QLoRA on GPUs: paged 8-bit AdamW (bitsandbytes),
    except under DeepSpeed, which drives its own optimizer step."""
    if recipe.training.optim != "auto":
        return recipe.training.optim
    if recipe.peft.method == "qlora" and on_gpu and not strategy.startswith("zero"):
        return "paged_adamw_8bit"
    return "adamw_torch_fused"


def use_liger(recipe: Recipe, on_gpu: bool) -> bool:
    """Liger fused kernels: `on` requires liger-kernel; `auto` uses them on GPUs when installed."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if recipe.training.liger == "on":
        if not installed:
            raise TailorError("training.liger=on but liger-kernel is not installed: `.venv/bin/pip install "
                              "liger-kernel`, or set training.liger=auto.")
        return True
    return recipe.training.liger == "auto" and installed and on_gpu
