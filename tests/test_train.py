"""Training: real bitsandbytes QLoRA on a tiny Qwen3, pinned loss values (2-process launches: test_distributed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_prep.prepare import prepare
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def test_qlora_step_trains_lora_and_freezes_nf4_base(tiny_recipe, tiny_qwen3: Path) -> None:
    import bitsandbytes as bnb
    import torch

    from train.run import build_trainer

    recipe = load_recipe(tiny_recipe(rows=24, model=tiny_qwen3), ["peft.method=qlora", "training.max_steps=3",
                                                                       "training.warmup_ratio=0"])
    prepare(recipe)
    trainer, _, _ = build_trainer(recipe)
    model = trainer.model
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized, "no 4-bit layer: QLoRA did not quantize the base"
    some = next(iter(quantized.values()))
    assert some.weight.quant_state.quant_type == "nf4" and some.weight.quant_state.nested  # double quantization
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    probe = torch.tensor([[151644, 872, 198, 9707, 151645]])

    def base_logits() -> torch.Tensor:  # the frozen base alone: adapters off
        with torch.no_grad(), model.disable_adapter():
            return model(input_ids=probe).logits.clone()

    base_before = base_logits()
    assert lora_before and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    trainer.train()

    params = dict(model.named_parameters())
    changed = [n for n, before in lora_before.items() if not torch.equal(before, params[n].detach())]
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    # bitsandbytes repacks 4-bit weights for its CPU kernel on first use and unpacks them to save the final
    # checkpoint, after which another CPU kernel computes the same NF4 weights: equal up to kernel rounding (~1e-3),
    # far below what 3 steps of training the base at this learning rate would change
    assert torch.allclose(base_before, base_logits(), atol=5e-3, rtol=0)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


# Pinned on the tiny random Qwen2.5 checkpoint (seed 42, 4 steps, batch 4 packed sequences of 64 tokens, lr 5e-3, no
# warmup); a change here means the data rendering, the loss mask, packing, the model build or the trainer changed
# behaviour. Regenerate only on purpose. (Before packing became the default, one row per sequence:
# [11.9385, 11.7032, 11.5896, 11.5160].)
EXPECTED_LOSSES = [11.9303, 11.6192, 11.5458, 11.4946]


def test_loss_regression_pinned_values(tiny_recipe) -> None:
    from train.run import train

    recipe = load_recipe(tiny_recipe(rows=48), ["training.max_steps=4", "training.warmup_ratio=0",
                                                    "training.lr=5e-3"])
    prepare(recipe)
    metrics = train(recipe)
    assert metrics["loss_history"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3), metrics["loss_history"]
    adapter = run_paths(recipe).adapter_dir
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer_config.json").is_file()
    assert json.loads((adapter / "recipe.json").read_text())["name"] == "tiny"


@pytest.mark.slow  # ~20 s; eval_steps alone is covered by test_pipeline (W&B eval/loss, eval_loss_history)
def test_held_out_loss_during_training_and_keep_best(tiny_recipe) -> None:
    """training.eval_steps scores fixed held-out rows every N steps without changing the training itself (same
    pinned losses); keep_best saves the adapter of the checkpoint with the lowest held-out loss."""
    from safetensors.torch import load_file

    from train.run import train

    recipe = load_recipe(tiny_recipe(rows=48), ["training.max_steps=4", "training.warmup_ratio=0",
                                                    "training.lr=5e-3", "training.eval_steps=1", "training.eval_rows=6",
                                                    "training.save_steps=1", "training.save_total_limit=1",
                                                    "training.keep_best=true"])
    prepare(recipe)
    metrics = train(recipe)
    assert metrics["loss_history"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)
    history = metrics["eval_loss_history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]  # the adapter learns the task's format
    best = min(history, key=lambda h: h["loss"])
    assert metrics["best_checkpoint"] == f"checkpoint-{best['step']}"
    assert metrics["best_eval_loss"] == pytest.approx(best["loss"], abs=1e-4)
    paths = run_paths(recipe)
    saved = load_file(paths.adapter_dir / "adapter_model.safetensors")
    kept = load_file(paths.checkpoints_dir / metrics["best_checkpoint"] / "adapter_model.safetensors")
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)


def test_keep_best_needs_eval_steps_that_divide_save_steps(tiny_recipe) -> None:
    from tailor.errors import TailorError

    with pytest.raises(TailorError, match="keep_best.*needs training.eval_steps"):
        load_recipe(tiny_recipe(rows=16), ["training.keep_best=true"])
    with pytest.raises(TailorError, match="save_steps \\(5\\) must be a multiple of eval_steps \\(2\\)"):
        load_recipe(tiny_recipe(rows=16), ["training.keep_best=true", "training.eval_steps=2", "training.save_steps=5"])


def test_train_refuses_stale_or_missing_data(tiny_recipe) -> None:
    from tailor.contract import check_prepared_data
    from tailor.errors import TailorError

    recipe = load_recipe(tiny_recipe(rows=16))
    with pytest.raises(TailorError, match="run `make data"):
        check_prepared_data(recipe, run_paths(recipe))
    prepare(recipe)
    changed = load_recipe(tiny_recipe(rows=16), ["data.heldout_fraction=0.5"])
    with pytest.raises(TailorError, match="different model/data settings"):
        check_prepared_data(changed, run_paths(changed))
