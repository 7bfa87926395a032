"""Merge and export: the merged folder loads with plain transformers and matches base + adapter (LoRA and QLoRA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.prepare import prepare
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import read_json, run_paths


def _train(recipe) -> None:
    from train.run import train

    prepare(recipe)
    train(recipe)


def _probe_logits(folder_or_model, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = folder_or_model
    if isinstance(folder_or_model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(str(folder_or_model), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _base_plus_adapter(model_dir: Path, adapter: Path, quantize: bool, recipe):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tailor.models import load_model

    base = (load_model(recipe.model, quantize_4bit=True) if quantize
            else AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32))
    return PeftModel.from_pretrained(base, str(adapter))


def test_lora_merge_matches_base_plus_adapter(tiny_recipe, tiny_qwen25: Path) -> None:
    import torch

    from train.merge import merge

    recipe = load_recipe(tiny_recipe(rows=24), ["training.lr=5e-3", "training.warmup_ratio=0"])
    _train(recipe)
    paths = run_paths(recipe)
    record = merge(recipe)

    merged = paths.merged_dir
    assert record["passed"] and record["checks"][0]["relative"] <= 1e-4
    assert list(merged.glob("*.safetensors")) and (merged / "tokenizer.json").is_file()
    assert not list(merged.glob("adapter_*")), "the merged folder must be a plain checkpoint"
    card = (merged / "README.md").read_text()
    assert "base_model:" in card and "## Merge check" in card and "## Training data" in card and "## Recipe" in card
    assert read_json(paths.record)["stages"]["merge"]["passed"] is True

    ids = [151644, 872, 198, 9707, 11, 1879, 0, 151645, 198, 151644, 77091, 198]
    reference = _probe_logits(_base_plus_adapter(tiny_qwen25, paths.adapter_dir, False, recipe), ids)
    base_only = _probe_logits(tiny_qwen25, ids)
    reloaded = _probe_logits(merged, ids)
    assert (reloaded - reference).abs().max() < 1e-4
    assert (base_only - reference).abs().max() > 1e-3, "the adapter changed nothing: the check would prove nothing"
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(merged)).model_type == "qwen2"
    assert torch.isfinite(reloaded).all()


def _untrained_qlora_adapter(recipe) -> None:
    """A QLoRA adapter made on the real NF4 base with random (non-zero) LoRA weights, saved like train.run does."""
    import dataclasses

    from peft import get_peft_model

    from tailor.models import load_model, load_tokenizer
    from train.config import lora_config

    base = load_model(recipe.model, quantize_4bit=True)
    config = dataclasses.replace(lora_config(recipe), init_lora_weights=False)
    model = get_peft_model(base, config)
    adapter = run_paths(recipe).adapter_dir
    model.save_pretrained(adapter)
    load_tokenizer(recipe.model).save_pretrained(adapter)


def _check_qlora_merge(recipe, model_dir: Path, out: Path, record: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    assert record["passed"]
    against = {c["against"]: c for c in record["checks"]}
    assert against["base + adapter (unmerged, same dtype)"]["relative"] <= 1e-4
    nf4 = against["NF4 base + adapter (as trained)"]
    assert nf4["passed"] and nf4["max_abs_diff"] > 0  # the bases differ by NF4 rounding, within its own gap
    assert len(list(out.glob("*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert getattr(reloaded.config, "quantization_config", None) is None, "merged from the 4-bit weights"
    assert not any("4bit" in type(m).__name__ for m in reloaded.modules())
    ids = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
    reference = _probe_logits(_base_plus_adapter(model_dir, run_paths(recipe).adapter_dir, False, recipe), ids)
    merged = _probe_logits(reloaded, ids)
    assert (merged - reference).abs().max() < 1e-4
    assert (merged - _probe_logits(model_dir, ids)).abs().max() > 1e-3, "the adapter changed nothing"
    assert "NF4 base + adapter" in (out / "README.md").read_text()
    assert read_json(run_paths(recipe).record)["stages"]["merge"]["method"] == "qlora"


def test_qlora_merge_uses_unquantized_base_and_checks_against_nf4(tiny_recipe, tiny_qwen3: Path) -> None:
    from train.merge import merge

    recipe = load_recipe(tiny_recipe(rows=8, model=tiny_qwen3), ["peft.method=qlora"])
    _untrained_qlora_adapter(recipe)  # no prepared data: the probes fall back to fixed chat prompts
    out = run_paths(recipe).root / "export"
    record = merge(recipe, out=str(out), max_shard_size="1MB")
    _check_qlora_merge(recipe, tiny_qwen3, out, record)


@pytest.mark.slow
def test_qlora_train_then_merge(tiny_recipe, tiny_qwen3: Path) -> None:
    from train.merge import merge

    recipe = load_recipe(tiny_recipe(rows=24, model=tiny_qwen3),
                         ["peft.method=qlora", "training.lr=5e-3", "training.warmup_ratio=0"])
    _train(recipe)
    out = run_paths(recipe).root / "export"
    record = merge(recipe, out=str(out), max_shard_size="1MB")
    _check_qlora_merge(recipe, tiny_qwen3, out, record)


def test_merge_refuses_folder_without_adapter(tiny_recipe, tmp_path: Path) -> None:
    from train.merge import main

    recipe_path = tiny_recipe(rows=8)
    recipe = load_recipe(recipe_path)
    with pytest.raises(TailorError, match="no adapter there.*make train"):
        from train.merge import merge

        merge(recipe)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(recipe_path), "--adapter", str(empty)])
    assert exit_info.value.code == 2
    assert not run_paths(recipe).merged_dir.exists()
