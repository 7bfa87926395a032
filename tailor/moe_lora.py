"""LoRA on the routed experts of mixture-of-experts models, frozen or targeted by choice (`peft.moe_experts`).

Fused 3-D expert weights are reached through peft's `target_parameters`. peft 0.21 moves targets named like the
expert or router linears (`gate_proj`, `up_proj`, `down_proj`, `gate`) onto the fused experts on some MoE types;
`moe_lora_targets` resolves the targets itself so the choice is explicit and the same for every family (docs/models.md).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from tailor.schema import PeftSettings

# A routed-expert weight: a 3-D parameter directly under a module named `experts`.
FUSED_EXPERT_PARAMETER = re.compile(r"(?:^|\.)experts\.([A-Za-z_]+)$")


def fused_expert_parameters(model: "nn.Module") -> list[str]:
    """The distinct `experts.<name>` suffixes of the model's fused (3-D) routed-expert weights, sorted."""
    found = set()
    for name, parameter in model.named_parameters():
        match = FUSED_EXPERT_PARAMETER.search(name)
        if match and parameter.ndim == 3:
            found.add(f"experts.{match.group(1)}")
    return sorted(found)


def peft_remapped_names(model: "nn.Module") -> set[str]:
    """Target names that peft moves onto the fused experts / router for this model type (empty if none)."""
    try:
        from peft.utils import transformers_weight_conversion as conversion

        base = conversion._MODEL_TO_CONVERSION_PATTERN.get(getattr(model.config, "model_type", None))
        return set(conversion._MOE_TARGET_MODULE_MAPPING.get(base, {}))
    except (ImportError, AttributeError):  # another peft: no rewrite known
        return set()


def linear_leaf_names(model: "nn.Module") -> list[str]:
    """Leaf names of the model's linear layers (what `all-linear` means), the output head excluded."""
    import torch.nn as nn

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and module is not head})


def moe_lora_targets(settings: "PeftSettings", model: "nn.Module") -> dict[str, Any]:
    """`LoraConfig` keyword arguments (`target_modules`, and `target_parameters` when targeted) for
    `settings.moe_experts` on `model`."""
    experts = fused_expert_parameters(model)
    if not experts:
        return {"target_modules": settings.target_modules}
    wanted = linear_leaf_names(model) if settings.target_modules == "all-linear" else list(settings.target_modules)
    remapped = peft_remapped_names(model)
    targets: dict[str, Any] = {"target_modules": [name for name in wanted if name.rpartition(".")[2] not in remapped]}
    if settings.moe_experts == "targeted":
        targets["target_parameters"] = experts
    return targets
