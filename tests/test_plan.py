"""Memory planner: the formula on hand-checked numbers, the 7B recipes' plans, refusal with fixes, and the
activation estimate against the tensors autograd really keeps on a tiny model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO, write
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from train import memory
from train.memory import Arch, LoraTarget, Setup

# A toy dense model: hidden 100, 2 layers, 4 heads of 25 (2 KV heads), MLP 300, vocab 1000, untied head.
TOY = Arch(model_type="toy", hidden=100, layers=2, heads=4, kv_heads=2, head_dim=25, v_head_dim=25, intermediate=300,
           vocab=1000, params_embed=100_000, params_lm_head=100_000, params_linear=2 * 200_000, params_other=500)


def test_weights_by_quantization_and_sharding() -> None:
    bf16 = Setup(weight_bytes=2)
    assert memory.weight_bytes(TOY, bf16) == 600_500 * 2
    assert memory.weight_bytes(TOY, replace(bf16, weight_bytes=4)) == 600_500 * 4
    # NF4: 0.5 byte + 8-bit absmax per 64 + fp32 scale per 64*256; embeddings, head and norms stay bf16
    nf4 = memory.weight_bytes(TOY, replace(bf16, method="qlora"))
    assert nf4 == pytest.approx(400_000 * (0.5 + 1 / 64 + 4 / 16384) + 200_500 * 2)
    assert memory.weight_bytes(TOY, replace(bf16, method="qlora", double_quant=False)) == pytest.approx(
        400_000 * 0.5625 + 200_500 * 2)
    assert memory.weight_bytes(TOY, replace(bf16, strategy="fsdp", gpus=4)) == 600_500 * 2 / 4
    assert memory.weight_bytes(TOY, replace(bf16, strategy="zero2", gpus=4)) == 600_500 * 2  # ZeRO-2: not sharded


def test_adapter_gradient_and_optimizer_bytes() -> None:
    lora = Setup(lora_params=1000, optim="adamw_torch_fused")
    assert memory.adapter_bytes(lora) == 4000  # peft keeps LoRA weights in fp32
    assert memory.gradient_bytes(lora) == 4000
    assert memory.optimizer_bytes(lora) == 8000  # exp_avg + exp_avg_sq in fp32
    assert memory.gradient_bytes(replace(lora, gpus=2)) == 8000  # DDP buckets
    qlora = replace(lora, method="qlora", optim="paged_adamw_8bit")
    assert memory.adapter_bytes(qlora) == 2000  # trl casts QLoRA adapters to bf16
    assert memory.optimizer_bytes(qlora) == pytest.approx(1000 * (2 + 8 / 256))
    zero3 = replace(lora, strategy="zero3", gpus=4, optim="adamw_torch")
    assert memory.optimizer_bytes(zero3) == 1000 * 12 / 4  # fp32 master + 2 moments, partitioned
    assert memory.adapter_bytes(zero3) == 2000 / 4


def test_activations_by_hand() -> None:
    targets = tuple(LoraTarget(layer, name, i, o) for layer in range(2) for name, i, o in
                    [("q_proj", 100, 100), ("k_proj", 100, 50), ("v_proj", 100, 50), ("o_proj", 100, 100),
                     ("gate_proj", 100, 300), ("up_proj", 100, 300), ("down_proj", 300, 100)])
    s = Setup(act_bytes=2, lora_r=8, targets=targets, micro_batch=2, seq_len=10, kv_repeated=True)
    # attention: q 100 + k, v repeated to 4 heads 100 + 100 + out 100, in bf16, + fp32 logsumexp per head
    assert memory.attention_saved_per_token(TOY, s) == 400 * 2 + 16
    assert memory.attention_saved_per_token(TOY, replace(s, kv_repeated=False)) == 300 * 2 + 16
    assert memory.mlp_saved_per_token(TOY, s, moe=False) == 3 * 300 * 2
    # LoRA without dropout: one shared input for q/k/v, one for gate/up, o and down inputs, 7 r-wide outputs
    lora = (100 + 100 + 100 + 300) * 2 + 7 * 8 * 2
    norms = 2 * (4 * 100 + 4)
    layer = norms + 816 + 1800 + lora
    assert memory.layer_saved_per_token(TOY, s, 0) == layer
    with_dropout = replace(s, lora_dropout=0.1)  # each module: dropped copy (bf16) + bool mask
    assert memory.layer_saved_per_token(TOY, with_dropout, 0) == layer - 600 * 2 + (6 * 100 + 300) * 3
    head = 4 * 100 + 4 + 100 * 2 + 16
    rotary = 2 * 10 * 25 * 2
    first = layer - (4 * 100 + 4)  # the first layer's input needs no gradient
    assert memory.activation_bytes(TOY, s) == 20 * (first + layer + head) + rotary
    checkpointed = replace(s, gradient_checkpointing=True)
    assert memory.activation_bytes(TOY, checkpointed) == 20 * (2 * 100 * 2 + head)
    assert memory.backward_working_bytes(TOY, checkpointed) == 2 * 20 * layer
    # fused LM head: one [tokens, vocab] tile (bf16 + fp32 copy) and the fp32 hidden-state gradient
    assert memory.logits_working_bytes(TOY, s) == 20 * 1000 * 6 + 20 * 100 * 4


def test_largest_micro_batch_is_the_boundary() -> None:
    s = Setup(act_bytes=2, micro_batch=1, seq_len=512)
    best = memory.largest_micro_batch(TOY, s, gpu_mem_gib=1.0)
    assert best >= 1
    assert memory.estimate(TOY, replace(s, micro_batch=best)).total <= memory.usable_bytes(1.0)
    assert memory.estimate(TOY, replace(s, micro_batch=best + 1)).total > memory.usable_bytes(1.0)
    assert memory.largest_micro_batch(TOY, s, gpu_mem_gib=0.5) == 0  # the CUDA context alone does not fit


@pytest.mark.parametrize("recipe,gpu_mem", [("qwen2.5-7b-lora.yaml", 80), ("qwen2.5-7b-qlora.yaml", 24)])
def test_7b_recipes_plan_prints_micro_batch(recipe: str, gpu_mem: int, capsys) -> None:
    from train.plan import main

    main([str(REPO / "recipes" / recipe), "--gpus", "1", "--gpu-mem", str(gpu_mem)])
    out = capsys.readouterr().out
    assert "7.62B params" in out and "40.4M adapter params" in out  # exact counts from the meta-device model
    for component in ("weights", "LoRA adapters", "optimizer state", "activations", "CUDA context", "total"):
        assert component in out
    best = int(out.split("largest micro batch that fits: ")[1].split()[0])
    assert best >= load_recipe(REPO / "recipes" / recipe).training.batch_size
    assert "verdict: FITS" in out


def test_qlora_needs_less_than_lora_and_sharding_divides_weights() -> None:
    from train.plan import make_plan

    lora = load_recipe(REPO / "recipes" / "qwen2.5-7b-lora.yaml")
    one = make_plan(lora, 1, 80)
    four = make_plan(lora, 4, 80, strategy="fsdp")
    assert one.estimate.components["weights"] == pytest.approx(7_615_616_512 * 2)  # Qwen2.5-7B in bf16
    assert four.estimate.components["weights"] == pytest.approx(7_615_616_512 * 2 / 4)
    qlora = make_plan(load_recipe(REPO / "recipes" / "qwen2.5-7b-qlora.yaml"), 1, 80)
    assert qlora.estimate.components["weights"] < 0.4 * one.estimate.components["weights"]


def test_recipe_that_does_not_fit_is_refused_with_fixes() -> None:
    from train.plan import check_fits

    recipe = load_recipe(REPO / "recipes" / "qwen2.5-7b-lora.yaml",
                         ["training.batch_size=16"])
    with pytest.raises(TailorError) as err:
        check_fits(recipe, 1, 24)
    message = str(err.value)
    assert "will not fit" in message and "24 GiB" in message
    best = int(message.split("lower training.batch_size to ")[1].split()[0])
    assert 1 <= best < 16 and check_fits(load_recipe(REPO / "recipes" / "qwen2.5-7b-lora.yaml",
                                                     [f"training.batch_size={best}"]), 1, 24).fits
    assert "peft.method=qlora" in message
    no_checkpointing = load_recipe(REPO / "recipes" / "qwen2.5-7b-lora.yaml",
                                   ["training.batch_size=2", "training.gradient_checkpointing=false"])
    with pytest.raises(TailorError, match="turn on training.gradient_checkpointing=true"):
        check_fits(no_checkpointing, 1, 24)
    assert check_fits(load_recipe(REPO / "recipes" / "qwen2.5-7b-qlora.yaml"), 1, 24).fits


@pytest.mark.parametrize("over", [0.9, 1.2, 1.4])
def test_launch_memory_check_is_silent_warns_or_refuses_by_margin(over: float, capsys) -> None:
    """The planner is not validated on GPUs yet: up to REFUSE_FACTOR x the usable memory it warns, above it refuses."""
    from train.__main__ import _check_memory
    from train.launch import Launch
    from train.plan import REFUSE_FACTOR, make_plan

    recipe = load_recipe(REPO / "recipes" / "qwen2.5-7b-lora.yaml")
    needed = make_plan(recipe, 1, 80).estimate.total  # the estimate does not depend on the card
    gpu_mem_gb = needed / (over * memory.usable_bytes(1.0))  # a card the estimate overshoots `over` times
    if over > REFUSE_FACTOR:
        with pytest.raises(TailorError) as err:
            _check_memory(recipe, Launch("single", 1), gpu_mem_gb)
        message = str(err.value)
        assert "will not fit" in message and f"{over:.2f}x" in message and f"{REFUSE_FACTOR:g}x margin" in message
        assert "--no-memory-check" in message and "TAILOR_NO_MEMORY_CHECK=1" in message
        return
    _check_memory(recipe, Launch("single", 1), gpu_mem_gb)
    warning = capsys.readouterr().err
    if over < 1:
        assert warning == ""
    else:
        assert warning.startswith("warning: recipe") and "may not fit in GPU memory" in warning
        assert f"{needed / memory.GiB:.1f} GiB per device needed" in warning and f"{over:.2f}x" in warning
        assert "lower training.batch_size to" in warning  # the plan's fixes


def test_no_memory_check_flag_and_environment(monkeypatch) -> None:
    from train.__main__ import build_parser

    assert not build_parser().parse_args(["r.yaml"]).no_memory_check
    assert build_parser().parse_args(["r.yaml", "--no-memory-check"]).no_memory_check
    monkeypatch.setenv("TAILOR_NO_MEMORY_CHECK", "1")
    assert build_parser().parse_args(["r.yaml"]).no_memory_check


def test_unknown_hub_model_asks_for_arch(tmp_path: Path) -> None:
    from train.plan import arch_configs, make_plan

    text = "name: x\nmodel: {name_or_path: someorg/unknown-model-9b}\ndata: {sources: [{path: d.jsonl}]}\n"
    recipe = load_recipe(write(tmp_path / "r.yaml", text))
    with pytest.raises(TailorError, match="--arch"):
        make_plan(recipe, 1, 80)
    plan = make_plan(recipe, 1, 80, arch_file=arch_configs()["qwen2.5-0.5b"])
    assert 0.45e9 < plan.arch.params_total < 0.55e9


def _saved_activation_bytes(model_dir: Path, recipe, batch: int, seq: int) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward (parameters excluded): the
    activation memory of the step, measured on CPU without a CUDA allocator."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from train.config import lora_config

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what trl's SFTTrainer does
    model = get_peft_model(model, lora_config(recipe))
    model.train()
    if recipe.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 5000, (batch, seq), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True).loss.backward()
    return sum(kept.values())


@pytest.mark.parametrize("model,overrides", [
    ("qwen2.5", []),
    ("qwen2.5", ["peft.target_modules=[q_proj, v_proj]"]),
    ("qwen2.5", ["training.gradient_checkpointing=true"]),
    ("qwen3", []),
])
def test_activation_estimate_matches_measured_on_cpu(model: str, overrides: list[str], tmp_path: Path) -> None:
    from tiny_models import ensure_tiny_model
    from train.plan import build_arch, recipe_setup

    model_dir = ensure_tiny_model(model)
    batch, seq = 2, 48
    text = (f"name: m\nmodel: {{name_or_path: {model_dir}}}\ndata: {{sources: [{{path: d.jsonl}}]}}\n"
            f"peft: {{r: 8, dropout: 0.0}}\ntraining: {{batch_size: {batch}, max_length: {seq}}}\n")
    recipe = load_recipe(write(tmp_path / "r.yaml", text), overrides)
    measured = _saved_activation_bytes(model_dir, recipe, batch, seq)
    arch, lora_params, targets = build_arch(recipe)
    # CPU, fp32, no padding: sdpa gets no mask and runs GQA without repeating K/V
    setup = replace(recipe_setup(recipe, 1, "ddp", lora_params, targets), weight_bytes=4, act_bytes=4,
                    kv_repeated=False)
    planned = memory.activation_bytes(arch, setup)
    assert measured <= planned <= 1.10 * measured, (planned, measured)
