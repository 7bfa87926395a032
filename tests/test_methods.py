"""Preference tuning and GRPO on the tiny random Qwen2.5: each method trains through the same recipe, data stage
and trainer builder as SFT; its own signal moves the right way (DPO: the chosen-minus-rejected reward margin rises on
the training pairs; GRPO: the mean of a learnable reward rises); SFT then DPO from the SFT adapter; refusals of a
wrong starting adapter before any model loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, chat_rows, write_jsonl, write_tiny_recipe
from data_prep.prepare import prepare
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import read_json, run_paths

FP32 = {"dtype": "float32"}


def pairs(n: int) -> list[dict]:
    """Preference rows: the JSON answer is chosen, a wordy wrong one rejected."""
    return [{"prompt": f"Say the number {i} as JSON.", "chosen": json.dumps({"number": i}),
             "rejected": f"The number is {i + 1}, I think."} for i in range(n)]


def unpaired(n: int) -> list[dict]:
    return [{"prompt": f"Say the number {i} as JSON.", "label": i % 2 == 0,
             "completion": json.dumps({"number": i}) if i % 2 == 0 else f"It is {i + 1}."} for i in range(n)]


def method_recipe(tmp_path: Path, model: Path, method: str, rows: list[dict], fmt: str, name: str | None = None,
                  training: dict | None = None, peft: dict | None = None, tail: str = "") -> Path:
    data = write_jsonl(tmp_path / f"{name or method}.jsonl", rows)
    return write_tiny_recipe(tmp_path / f"{name or method}.yaml", model, data, name or method, model_keys=FP32,
                             data_keys={"sources": [{"path": str(data), "format": fmt}]},
                             training={"method": method, "mixed_precision": "fp32", "lr": 5e-3, "warmup_ratio": 0,
                                       "max_steps": 6, **(training or {})}, peft=peft, tail=tail)


def train_run(path: Path, *overrides: str) -> dict:
    from train.run import train

    recipe = load_recipe(path, list(overrides))
    prepare(recipe)
    return train(recipe)


def curve(metrics: dict, name: str) -> list[float]:
    return [value for _, value in metrics["curves"][name]]


def lora(path: Path) -> dict:
    return load_file(path / "adapter_model.safetensors")


def test_dpo_margin_rises_on_the_training_pairs(tmp_path: Path, tiny_qwen25: Path) -> None:
    metrics = train_run(method_recipe(tmp_path, tiny_qwen25, "dpo", pairs(40), "preference"))
    margins = curve(metrics, "rewards/margins")
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert margins[-1] > 0.05 and sum(margins[-3:]) > sum(margins[:3]) + 0.1
    assert curve(metrics, "rewards/accuracies")[-1] > 0.5
    assert metrics["method"] == "dpo" and metrics["tokens_seen"] > 0
    adapter = run_paths(load_recipe(tmp_path / "dpo.yaml")).adapter_dir
    assert any(float(t.abs().max()) > 0 for n, t in lora(adapter).items() if "lora_B" in n)


@pytest.mark.parametrize("method, fmt, signal", [("orpo", "preference", "log_odds_ratio"),
                                                 ("kto", "unpaired_preference", "kl")])
def test_orpo_and_kto_train_and_change_the_adapter(tmp_path: Path, tiny_qwen25: Path, method, fmt, signal) -> None:
    rows = pairs(32) if fmt == "preference" else unpaired(32)
    metrics = train_run(method_recipe(tmp_path, tiny_qwen25, method, rows, fmt,
                                      training={"max_steps": 3, "batch_size": 4}))
    assert metrics["steps"] == 3 and all(torch.isfinite(torch.tensor(metrics["loss_history"])))
    assert signal in metrics["curves"] and "rewards/chosen" in metrics["curves"]
    adapter = run_paths(load_recipe(tmp_path / f"{method}.yaml")).adapter_dir
    assert any(float(t.abs().max()) > 0 for n, t in lora(adapter).items() if "lora_B" in n)


def test_grpo_mean_reward_of_a_learnable_reward_rises(tmp_path: Path, tiny_qwen25: Path, monkeypatch) -> None:
    from grpo_reward_example import TINY_MODEL_ENV

    monkeypatch.setenv(TINY_MODEL_ENV, str(tiny_qwen25))
    monkeypatch.chdir(REPO)  # project functions come from inside the project
    rows = [{"prompt": f"Say yes {i}.", "completion": "yes"} for i in range(64)]
    path = method_recipe(tmp_path, tiny_qwen25, "grpo", rows, "prompt_completion",
                         training={"max_steps": 10, "batch_size": 8, "lr": 5e-2, "lr_scheduler": "constant"},
                         tail="grpo:\n  rewards: [tests.grpo_reward_example:yes_side, {name: exact_match, weight: 0}]\n"
                              "  num_generations: 8\n  max_completion_length: 4\n  temperature: 0.1\n")
    metrics = train_run(path)
    reward = curve(metrics, "rewards/yes_side/mean")
    assert len(reward) == 10 and "rewards/exact_match/mean" in metrics["curves"]
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.1, reward  # ~0.45 -> ~0.8 on this checkpoint
    assert "completions/mean_length" in metrics["curves"] and "reward_std" in metrics["curves"]


def test_sft_then_dpo_starts_from_the_sft_adapter(tmp_path: Path, tiny_qwen25: Path) -> None:
    sft = write_tiny_recipe(tmp_path / "sft.yaml", tiny_qwen25, write_jsonl(tmp_path / "chat.jsonl", chat_rows(40)),
                            "sft", model_keys=FP32, training={"mixed_precision": "fp32", "lr": 5e-3})
    train_run(sft)
    sft_adapter = lora(run_paths(load_recipe(sft)).adapter_dir)
    path = method_recipe(tmp_path, tiny_qwen25, "dpo", pairs(40), "preference", training={"max_steps": 3},
                         peft={"from_run": "sft"})
    metrics = train_run(path)
    # the reference is the SFT adapter (trl's frozen copy), so the margin starts at 0 from there
    assert curve(metrics, "rewards/margins")[0] == pytest.approx(0.0, abs=1e-6)
    assert metrics["init_adapter"]["run"] == "sft" and len(metrics["init_adapter"]["sha256"]) == 64
    recipe = load_recipe(path)
    folder = run_paths(recipe).adapter_dir
    assert not (folder / "ref").exists()  # trl's reference copy is not part of the result
    dpo_adapter = lora(folder)
    assert dpo_adapter.keys() == sft_adapter.keys()
    moved = max(float((dpo_adapter[k] - sft_adapter[k]).abs().max()) for k in sft_adapter)
    assert 0 < moved < max(float(t.abs().max()) for t in sft_adapter.values())  # trained on from SFT, not anew
    record = read_json(run_paths(recipe).record)
    assert record["stages"]["train"]["init_adapter"]["run"] == "sft" and record["stages"]["train"]["method"] == "dpo"


def test_wrong_starting_adapters_are_refused_naming_the_recipe_line(tmp_path: Path, tiny_qwen25: Path,
                                                                    tiny_qwen3: Path) -> None:
    from train.init_adapter import init_adapter_record

    path = method_recipe(tmp_path, tiny_qwen25, "dpo", pairs(8), "preference", peft={"init_adapter": "nowhere"})
    with pytest.raises(TailorError, match=r"dpo\.yaml:\d+: peft\.init_adapter: nowhere does not exist"):
        init_adapter_record(load_recipe(path))
    (tmp_path / "not-adapter").mkdir()
    with pytest.raises(TailorError, match="is not a trained adapter folder"):
        init_adapter_record(load_recipe(path, [f"peft.init_adapter={tmp_path / 'not-adapter'}"]))
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_qwen3), "r": 16,
                                                           "lora_alpha": 32}))
    (other / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(TailorError, match=r"was trained on base model .*qwen3.*model\.name_or_path at"):
        init_adapter_record(load_recipe(path, [f"peft.init_adapter={other}"]))
    (other / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_qwen25), "r": 8}))
    with pytest.raises(TailorError, match=r"peft\.r is 16 but the adapter .* has r=8"):
        init_adapter_record(load_recipe(path, [f"peft.init_adapter={other}"]))
    (other / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_qwen25), "r": 8,
                                                           "lora_dropout": 0.1}))
    with pytest.raises(TailorError, match=r"peft\.dropout is 0\.05 but the adapter .* has lora_dropout=0\.1"):
        init_adapter_record(load_recipe(path, [f"peft.init_adapter={other}", "peft.r=8"]))
    assert init_adapter_record(load_recipe(path, [f"peft.init_adapter={other}", "peft.r=8", "peft.dropout=0.1"]))[
        "run"] is None
    with pytest.raises(TailorError, match=r"peft\.from_run: .*runs/sft/adapter does not exist \(train run 'sft'"):
        init_adapter_record(load_recipe(path, ["peft.init_adapter=null", "peft.from_run=sft"]))


@pytest.mark.parametrize("extra, error", [
    (["grpo.rewards=[]"], r"training\.method: method grpo needs rewards"),
    (["grpo.rewards=[json_vaild]"],
     r"grpo\.rewards\[0\]\.name: .*unknown reward 'json_vaild' \(did you mean 'json_valid'\?\)"),
    (["dpo.beta=0.2"], r"dpo: dpo settings are given but training\.method is grpo"),
    (["training.method=dpo", "grpo=null"], r"data\.sources\[0\]\.format: training\.method dpo trains on preference data"),
    (["training.extra={temperature: 0.5}"], r"training\.extra\.temperature: tailor sets GRPOConfig\.temperature "
                                            r"itself: use grpo\.temperature"),
    (["training.packing=true"], r"training\.packing: packing applies to method sft only"),
    (["training.eval_steps=5"], r"training\.eval_steps: the held-out loss during training is SFT's"),
    (["peft.init_adapter=a", "peft.from_run=b"], r"peft\.from_run: give init_adapter or from_run, not both"),
    (["training.method=dpo", "grpo=null", "data.sources.0.format=preference", "dpo.label_smoothing=0.1"],
     r"dpo\.label_smoothing: trl's sigmoid loss ignores label_smoothing"),
])
def test_method_settings_that_cannot_work_are_refused_at_load(tmp_path: Path, tiny_qwen25: Path, extra, error) -> None:
    path = method_recipe(tmp_path, tiny_qwen25, "grpo", [{"prompt": "a", "completion": "b"}], "prompt_completion",
                         tail="grpo:\n  rewards: [exact_match]\n")
    load_recipe(path)  # valid as written
    with pytest.raises(TailorError, match=error):
        load_recipe(path, extra)


def test_launcher_refuses_a_wrong_starting_adapter_before_any_model_loads(tmp_path: Path, tiny_qwen25: Path) -> None:
    import subprocess
    import sys

    path = method_recipe(tmp_path, tiny_qwen25, "dpo", pairs(8), "preference", peft={"from_run": "missing"})
    prepare(load_recipe(path))
    result = subprocess.run([sys.executable, "-m", "train", str(path)], cwd=REPO, capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode != 0
    assert re.search(r"dpo\.yaml:\d+: peft\.from_run: .*missing/adapter does not exist", result.stderr), result.stderr
    assert "accelerate" not in result.stdout and "Loading weights" not in result.stderr


def test_sft_data_and_training_hashes_are_those_of_before_the_methods(monkeypatch) -> None:
    """Adding the methods (new schema keys with defaults) must not invalidate SFT runs' prepared data, finished
    adapters and checkpoints: the demo's hashes are pinned at their values before (commit 298ddcd)."""
    from tailor.contract import data_hash
    from train.checkpoints import training_key

    monkeypatch.chdir(REPO)  # recipe paths resolve relative to the working directory
    recipe = load_recipe("recipes/hotel-demo.yaml")
    assert data_hash(recipe).startswith("0d1e7b81f477eb32")
    assert training_key(recipe, data_hash(recipe)).startswith("31f53df44933334a")


def test_kto_on_pairs_never_scores_kl_against_the_same_prompts_other_answer(tmp_path: Path, tiny_qwen25: Path) -> None:
    from train.run import build_trainer

    recipe = load_recipe(method_recipe(tmp_path, tiny_qwen25, "kto", pairs(16), "preference"))
    prepare(recipe)
    trainer, _, _ = build_trainer(recipe)
    rows = trainer.train_dataset
    assert len(rows) == 2 * len({tuple(ids) for ids in rows["prompt_ids"]})  # each pair: desirable + undesirable
    for row in rows:  # the KL term compares with a completion to another prompt
        own = {tuple(r["completion_ids"]) for r in rows if r["prompt_ids"] == row["prompt_ids"]}
        assert tuple(row["KL_completion_ids"]) not in own


def test_grpo_prompts_keep_the_templates_bos_once() -> None:
    from datasets import Dataset
    from tiny_models import ensure_tiny_model
    from transformers import AutoTokenizer

    from train.run import _without_leading_bos

    tiny_llama3 = ensure_tiny_model("llama3")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.startswith(tokenizer.bos_token)  # Llama 3's template writes it; its tokenizer adds it too
    fixed = _without_leading_bos(Dataset.from_list([{"prompt": prompt}]), tokenizer)[0]["prompt"]
    ids = tokenizer(fixed)["input_ids"]  # as trl tokenizes a text prompt
    assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]  # as eval does: one BOS


def test_qlora_dpo_from_a_qlora_sft_adapter_trains_on_the_4bit_base(tmp_path: Path, tiny_qwen3: Path) -> None:
    import bitsandbytes as bnb

    from train.run import build_trainer

    qlora = {"method": "qlora"}
    sft = write_tiny_recipe(tmp_path / "sft.yaml", tiny_qwen3, write_jsonl(tmp_path / "chat.jsonl", chat_rows(24)),
                            "sft", model_keys=FP32, peft=qlora, training={"mixed_precision": "fp32"})
    train_run(sft)
    path = method_recipe(tmp_path, tiny_qwen3, "dpo", pairs(24), "preference", training={"max_steps": 2},
                         peft={**qlora, "from_run": "sft"})
    recipe = load_recipe(path)
    prepare(recipe)
    trainer, _, manifest = build_trainer(recipe)
    assert manifest["init_adapter"]["run"] == "sft"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and ".default." in n for n in trained)  # the "ref" copy stays frozen
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n in trained}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
