"""Every shipped model recipe (recipes/models/) maps onto a tiny checkpoint of the same architecture and trains on
it; MoE experts are frozen or targeted by choice (`peft.moe_experts`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from conftest import REPO
from tailor.recipe import load_recipe
from train.plan import arch_configs

MODELS = REPO / "recipes" / "models"
# recipe -> (tiny checkpoint, model_type of the real hub model's config.json)
RECIPE_TINY = {
    "qwen2.5-0.5b": ("qwen2.5", "qwen2"), "qwen2.5-1.5b": ("qwen2.5", "qwen2"), "qwen2.5-3b": ("qwen2.5", "qwen2"),
    "qwen2.5-14b": ("qwen2.5", "qwen2"), "qwen2.5-32b": ("qwen2.5", "qwen2"), "qwen2.5-72b": ("qwen2.5", "qwen2"),
    "qwen3-8b": ("qwen3", "qwen3"),
    "qwen3-30b-a3b-experts-frozen": ("qwen3-moe", "qwen3_moe"),
    "qwen3-30b-a3b-experts-targeted": ("qwen3-moe", "qwen3_moe"),
    "deepseek-r1-distill-qwen-7b": ("r1-distill-qwen", "qwen2"),
    "deepseek-r1-distill-qwen-32b": ("r1-distill-qwen", "qwen2"),
    "deepseek-v3": ("deepseek-v3", "deepseek_v3"),
    "kimi-k2": ("deepseek-v3", "deepseek_v3"),  # Kimi K2 declares kimi_k2 but is the DeepSeek-V3 architecture
    "llama3.1-8b": ("llama3", "llama"),
    "gemma3-1b": ("gemma3", "gemma3_text"),
    "gpt-oss-20b": ("gpt-oss", "gpt_oss"),
    "seed-oss-36b": ("seed-oss", "seed_oss"),
}
# Real architecture configs shipped in tailor/arch_configs for some of them.
ARCH_CONFIGS = {"qwen2.5-0.5b": "qwen2.5-0.5b", "qwen2.5-72b": "qwen2.5-72b", "qwen3-8b": "qwen3-8b",
                "qwen3-30b-a3b-experts-frozen": "qwen3-30b-a3b", "qwen3-30b-a3b-experts-targeted": "qwen3-30b-a3b",
                "deepseek-r1-distill-qwen-7b": "deepseek-r1-distill-qwen-7b"}

def _shipped() -> list[str]:
    return sorted(path.stem for path in MODELS.glob("*.yaml"))


def test_every_model_recipe_maps_to_a_tiny_checkpoint_of_its_architecture() -> None:
    from transformers import AutoConfig

    from tiny_models import SPECS, model_config

    assert _shipped() == sorted(RECIPE_TINY)
    for stem, (tiny, model_type) in RECIPE_TINY.items():
        recipe = load_recipe(MODELS / f"{stem}.yaml")
        assert recipe.model.gguf_file is None and "/" in recipe.model.name_or_path, stem
        assert tiny in SPECS and model_config(tiny).model_type == model_type, stem
        if stem in ARCH_CONFIGS:
            real = json.loads(arch_configs()[ARCH_CONFIGS[stem]].read_text())
            assert real["model_type"] == model_type and real["architectures"] == [SPECS[tiny].architecture], stem
            assert AutoConfig.for_model(**real).model_type == model_type
    moe = {stem: load_recipe(MODELS / f"{stem}.yaml").peft.moe_experts for stem in RECIPE_TINY}
    assert moe["qwen3-30b-a3b-experts-frozen"] == "frozen" and moe["qwen3-30b-a3b-experts-targeted"] == "targeted"


def _lora_modules(name: str, moe_experts: str) -> tuple[dict, set[str]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tailor.moe_lora import moe_lora_targets
    from tailor.schema import PeftSettings
    from tiny_models import ensure_tiny_model

    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model(name), attn_implementation="eager")
    targets = moe_lora_targets(PeftSettings(moe_experts=moe_experts, dropout=0.0), model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **targets))
    ids = torch.randint(0, 1000, (2, 10))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    with_grad = {re.sub(r"\.lora_[AB]\..*", "", key).removeprefix("base_model.model.model.")
                 for key, parameter in peft_model.named_parameters()
                 if "lora_" in key and parameter.grad is not None and parameter.grad.abs().sum() > 0}
    return targets, with_grad


@pytest.mark.parametrize("name", ["qwen3-moe", "gpt-oss"])
def test_moe_experts_frozen_or_targeted(name: str) -> None:
    targets, trained = _lora_modules(name, "frozen")
    assert "target_parameters" not in targets
    assert not [module for module in trained if ".experts" in module or module.endswith(".gate")]
    assert any(module.endswith("self_attn.q_proj") for module in trained)

    targets, trained = _lora_modules(name, "targeted")
    assert targets["target_parameters"] == ["experts.down_proj", "experts.gate_up_proj"]
    experts = {module for module in trained if ".mlp.experts" in module}
    assert {f"layers.{layer}.mlp.experts" for layer in (0, 1)} <= {m.removesuffix(".base_layer") for m in experts}
    assert any(module.endswith("self_attn.q_proj") for module in trained)


def test_targeted_experts_refuse_dropout() -> None:
    from pydantic import ValidationError

    from tailor.schema import PeftSettings

    with pytest.raises(ValidationError, match="set peft.dropout: 0.0"):
        PeftSettings(moe_experts="targeted", dropout=0.05)
    assert PeftSettings(moe_experts="frozen", dropout=0.05).dropout == 0.05


def test_moe_setting_is_ignored_for_dense_models() -> None:
    from transformers import AutoModelForCausalLM

    from tailor.moe_lora import moe_lora_targets
    from tailor.schema import PeftSettings
    from tiny_models import ensure_tiny_model

    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model("qwen2.5"))
    for mode in ("frozen", "targeted"):
        assert moe_lora_targets(PeftSettings(moe_experts=mode, dropout=0.0), model) == {"target_modules": "all-linear"}


@pytest.mark.slow
@pytest.mark.parametrize("stem", [stem
                                  for stem in sorted(RECIPE_TINY)])
def test_model_recipe_trains_on_its_tiny_checkpoint(stem: str, tmp_path: Path) -> None:
    """The recipe's own peft and training settings, shrunk to 1 step of 2 rows on the tiny checkpoint (CPU)."""
    from data_prep.prepare import prepare
    from tiny_models import ensure_tiny_model
    from train.run import train

    tiny = ensure_tiny_model(RECIPE_TINY[stem][0])
    recipe = load_recipe(MODELS / f"{stem}.yaml", [
        f"output_dir={tmp_path}", "tracking.mode=disabled", f"model.name_or_path={tiny}", "model.dtype=float32",
        "model.revision=null", "data.max_train_rows=8", "data.max_heldout_rows=4", "training.max_steps=1",
        "training.batch_size=2", "training.grad_accum=1", "training.max_length=256",
        "training.mixed_precision=fp32"])
    manifest = prepare(recipe)
    assert manifest["tokens"]["train_trained"] > 0
    metrics = train(recipe)
    assert metrics["steps"] == 1 and all(math.isfinite(loss) for loss in metrics["loss_history"])
