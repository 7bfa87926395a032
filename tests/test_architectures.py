"""Every shipped tiny recipe runs data -> train -> eval on its real architecture, tokenizer and chat template."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import REPO
from tailor.recipe import load_recipe

# The Qwen and DeepSeek families run in the default suite; the second tier (families teams compare against) runs
# in `make test-slow` to keep the default suite within its time budget.
SECOND_TIER = pytest.mark.slow
# r1-distill-qwen is the Qwen2 architecture of qwen2.5 with DeepSeek-R1's template, qwen3 the dense sibling of
# qwen3-moe (test_templates checks both templates' masks; test_train and test_packing train the tiny Qwen3).
TINY = ["qwen2.5", "qwen3-moe", "deepseek-v3",
        *(pytest.param(name, marks=SECOND_TIER) for name in ("qwen3", "r1-distill-qwen", "llama3", "gemma3",
                                                             "gpt-oss", "seed-oss"))]


@pytest.mark.parametrize("name", TINY)
def test_tiny_recipe_end_to_end(name: str, tmp_path: Path) -> None:
    from data_prep.prepare import prepare
    from eval.run import evaluate
    from tiny_models import ensure_tiny_model
    from train.run import train

    ensure_tiny_model(name)
    recipe = load_recipe(REPO / "recipes" / "tiny" / f"{name}.yaml",
                         [f"output_dir={tmp_path}", "tracking.mode=disabled"])
    manifest = prepare(recipe)
    assert manifest["rows"]["train"] == 32 and manifest["tokens"]["train_trained"] > 0
    metrics = train(recipe)
    assert metrics["steps"] == 2 and all(math.isfinite(loss) for loss in metrics["loss_history"])
    results = evaluate(recipe)
    assert results["rows"] == 8
    for variant in ("base", "tuned"):
        assert math.isfinite(results["models"][variant]["loss"])
