"""End to end through the command-line stages on a tiny model, with real offline W&B files read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tailor.recipe import load_recipe
from tailor.runs import read_json, run_paths

WANDB = str(Path(sys.executable).with_name("wandb"))


def run_stage(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def inspect_runs(wandb_dir: Path) -> dict[str, dict]:
    """Each offline run's summary, read back from its .wandb log by `wandb leet inspect`, keyed by run name."""
    runs = {}
    for folder in sorted(wandb_dir.glob("offline-run-*")):
        out = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(folder)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        data = json.loads(out)
        runs[data["name"]] = data
    return runs


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_qwen25: Path):
    """data -> train -> eval on the tiny Qwen2.5 with offline W&B; returns (recipe path, recipe, outputs)."""
    from conftest import chat_rows, write, write_jsonl

    tmp = tmp_path_factory.mktemp("pipeline")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(40))
    path = write(tmp / "recipe.yaml", f"""
        name: e2e
        output_dir: {tmp / 'runs'}
        model: {{name_or_path: {tiny_qwen25}}}
        data: {{sources: [{{path: {data}}}], heldout_fraction: 0.2}}
        training: {{max_steps: 3, batch_size: 4, max_length: 64, logging_steps: 1, lr: 5.0e-3, warmup_ratio: 0,
                     eval_steps: 2, eval_rows: 4}}
        eval: {{metrics: [exact_match, json_valid, json_field_accuracy], max_new_tokens: 6, batch_size: 8}}
        tracking: {{mode: offline, project: tailor-test}}
    """)
    outputs = {}
    for module in ("data_prep", "train", "eval"):
        result = run_stage(module, str(path))
        assert result.returncode == 0, f"{module} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        outputs[module] = result.stdout
    return path, load_recipe(path), outputs


def test_stages_write_run_folder(pipeline) -> None:
    _, recipe, outputs = pipeline
    paths = run_paths(recipe)
    record = read_json(paths.record)["stages"]
    assert set(record) == {"data", "train", "eval"}
    results = read_json(paths.results)
    assert set(results["models"]) == {"base", "tuned"} and results["rows"] == read_json(paths.manifest)["rows"]["heldout"]
    for variant in ("base", "tuned"):
        assert results["models"][variant]["loss"] > 0 and 0 <= results["models"][variant]["json_valid"] <= 1
    assert set(results["comparisons"]) == {"exact_match", "json_valid", "json_field_accuracy"}
    assert all(c["ci_low"] <= c["delta"] <= c["ci_high"] for c in results["comparisons"].values())
    # training on the assistant tokens lowers the held-out loss on them
    assert results["models"]["tuned"]["loss"] < results["models"]["base"]["loss"]
    predictions = [json.loads(line) for line in paths.predictions.read_text().splitlines()]
    assert len(predictions) == results["rows"] and {"base", "tuned", "reference", "tuned_scores"} <= set(predictions[0])
    assert "metric" in outputs["eval"] and "base" in outputs["eval"] and "delta" in outputs["eval"]
    # precision auto: the device's choice, printed once and recorded with its reason
    from tailor.precision import device_precision

    chosen = device_precision()
    assert record["train"]["precision"]["name"] == chosen.name and record["train"]["precision"]["reason"]
    assert outputs["train"].count("train: precision ") == 1
    assert record["eval"]["precision"]["dtype"] == {"bf16": "bfloat16", "fp32": "float32"}[chosen.name]
    assert results["precision"]["dtype"] == record["eval"]["precision"]["dtype"]


def test_wandb_offline_runs_hold_train_loss_and_eval_metrics(pipeline) -> None:
    _, recipe, _ = pipeline
    runs = inspect_runs(run_paths(recipe).root / "wandb")
    assert set(runs) == {"e2e-data", "e2e-train", "e2e-eval"}
    assert all(r["state"] == "finished" and r["project"] == "tailor-test" for r in runs.values())
    train = runs["e2e-train"]["summary"]
    assert isinstance(train["train/loss"], float) and train["train/loss"] > 0
    assert train["steps"] == 3
    # training.eval_steps: the held-out loss at step 2 and at the last step, next to the training loss, on 4 fixed
    # held-out rows
    assert isinstance(train["eval/loss"], float) and train["eval/loss"] > 0
    history = read_json(run_paths(recipe).adapter_dir / "train_metrics.json")["eval_loss_history"]
    assert [h["step"] for h in history] == [2, 3] and history[-1]["loss"] == pytest.approx(train["eval/loss"], abs=1e-4)
    evaluation = runs["e2e-eval"]["summary"]
    results = read_json(run_paths(recipe).results)
    assert evaluation["eval/tuned/loss"] == pytest.approx(results["models"]["tuned"]["loss"])
    assert evaluation["eval/base/json_valid"] == pytest.approx(results["models"]["base"]["json_valid"])
    assert "eval/delta/loss" in evaluation
    data = runs["e2e-data"]["summary"]
    assert data["rows"]["train"] > 0 and data["audit"]["end_of_turn"] == "<|im_end|>" and "pii" in data
    # tracking.log_samples is off: no row text reaches the W&B files of any stage
    wandb_bytes = b"".join(p.read_bytes() for p in (run_paths(recipe).root / "wandb").rglob("*") if p.is_file())
    assert b"Say the number 7 as JSON." not in wandb_bytes
    assert runs["e2e-train"]["config"]["precision"]["name"] in ("bf16", "fp32")
    config = runs["e2e-eval"]["config"]
    assert config["recipe"]["name"] == "e2e" and len(config["recipe_hash"]) == 64 and config["stage"] == "eval"


@pytest.mark.slow  # ~20 s; eval of other adapters is also covered in-process by test_eval_compare
def test_eval_of_a_saved_adapter_folder_elsewhere(pipeline, tmp_path: Path) -> None:
    import shutil

    path, recipe, _ = pipeline
    copy = tmp_path / "my-adapter"
    shutil.copytree(run_paths(recipe).adapter_dir, copy)
    result = run_stage("eval", str(path), "tracking.mode=disabled", "eval.compare_base=false", "--adapter", str(copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(run_paths(recipe).results)["adapter"] == str(copy)


def test_eval_without_adapter_is_a_clear_error(pipeline, tmp_path: Path) -> None:
    path, _, _ = pipeline
    result = run_stage("eval", str(path), "tracking.mode=disabled", "--adapter", str(tmp_path))
    assert result.returncode == 2
    assert "holds no adapter" in result.stderr and "Traceback" not in result.stderr


def test_malformed_jsonl_line_is_reported_by_line_number(tmp_path: Path, tiny_qwen25: Path) -> None:
    from conftest import chat_rows, write, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(5))
    with data.open("a") as handle:
        handle.write('{"messages": [}\n')
    path = write(tmp_path / "r.yaml", f"""
        name: bad
        output_dir: {tmp_path / 'runs'}
        model: {{name_or_path: {tiny_qwen25}}}
        data: {{sources: [{{path: {data}}}]}}
        tracking: {{mode: disabled}}
    """)
    result = run_stage("data_prep", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1 of 6 rows" in result.stderr
    rejected = (tmp_path / "runs" / "bad" / "data" / "rejected.jsonl").read_text()
    assert f'"where": "{data}:6"' in rejected and "malformed JSON" in rejected
