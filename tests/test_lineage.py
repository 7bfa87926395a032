"""Lineage and the run record: a real tiny pipeline (data -> train -> eval, offline W&B) read back from its files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, chat_rows, write, write_jsonl
from tailor.recipe import load_recipe, recipe_hash
from tailor.runs import RunPaths, read_json, run_paths, update_record

WANDB = str(Path(sys.executable).with_name("wandb"))
FAKE_WANDB_KEY = "local-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
FAKE_HF_TOKEN = "hf_FakeTokenForTailorPrivacyTest0123456789"
_BUILT: dict[str, Any] = {}


def _run(module: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_API_KEY": FAKE_WANDB_KEY, "HF_TOKEN": FAKE_HF_TOKEN}
    env.pop("TAILOR_GPU_HOUR_PRICE", None)
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{module} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def build_pipeline(tmp: Path, model: Path) -> dict[str, Any]:
    """Run A: data, train (accelerate launcher), eval, tracked offline with fake secrets in the environment.
    Run B: the same recipe with another training.lr, trained (one process) on a copy of A's prepared data.
    Built once per session (the fixture is shared by test_compare and test_privacy)."""
    if "a" in _BUILT:
        return _BUILT
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(40))
    recipe = write(tmp / "recipe.yaml", f"""
        name: lin-a
        output_dir: {tmp / 'runs'}
        model: {{name_or_path: {model}}}
        data: {{sources: [{{path: {data}}}], heldout_fraction: 0.2}}
        training: {{max_steps: 2, batch_size: 4, max_length: 64, logging_steps: 1, lr: 5.0e-3, warmup_ratio: 0}}
        eval: {{metrics: [exact_match, json_valid], max_new_tokens: 4, batch_size: 8, max_rows: 6,
               bootstrap_resamples: 200}}
        tracking:
          mode: offline
          project: tailor-lineage
          tags: [lineage-test]
          gpu_hour_price: 3.0
          api_price_per_1m_tokens: {{input: 1.5, output: 6.0}}
    """)
    logs = [_run(module, str(recipe)) for module in ("data_prep", "train", "eval")]
    b_args = [str(recipe), "name=lin-b", "training.lr=1.0e-3"]
    shutil.copytree(tmp / "runs" / "lin-a" / "data", tmp / "runs" / "lin-b" / "data")  # same data section
    logs.append(_run("train.run", *b_args))
    _BUILT.update(a=run_paths(load_recipe(recipe)), b=run_paths(load_recipe(recipe, b_args[1:])),
                  recipe=load_recipe(recipe), logs="\n".join(logs))
    return _BUILT


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, tiny_qwen25: Path) -> dict[str, Any]:
    return build_pipeline(tmp_path_factory.mktemp("lineage"), tiny_qwen25)


@pytest.fixture(scope="session")
def two_runs(pipeline) -> tuple[Path, Path]:
    return pipeline["a"].root, pipeline["b"].root


def inspect_runs(wandb_dir: Path) -> dict[str, dict]:
    """Each offline run's config and summary, read back from its .wandb log by `wandb leet inspect`."""
    runs = {}
    for folder in sorted(wandb_dir.glob("offline-run-*")):
        out = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(folder)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        data = json.loads(out)
        runs[data["name"]] = data
    return runs


def test_every_wandb_run_carries_the_lineage(pipeline) -> None:
    paths: RunPaths = pipeline["a"]
    runs = inspect_runs(paths.root / "wandb")
    assert set(runs) == {"lin-a-data", "lin-a-train", "lin-a-eval"}
    card_hash = hashlib.sha256((paths.data_dir / "data_card.json").read_bytes()).hexdigest()
    for name, run in runs.items():
        config = run["config"]
        assert config["recipe"]["name"] == "lin-a" and config["recipe"]["training"]["lr"] == 5.0e-3
        assert config["recipe_hash"] == recipe_hash(pipeline["recipe"]), name
        assert config["data_card_hash"] == card_hash, name
        commit = config["code"]["git_commit"]  # HEAD itself may move while the tests run
        assert re.fullmatch("[0-9a-f]{40}", commit) and isinstance(config["code"]["git_dirty"], bool)
        assert subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO).returncode == 0
        for package in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
            assert config["code"]["packages"][package] == metadata.version(package)
        assert config["launch"] == {"strategy": "single", "world_size": 1}
        assert config["hardware"]["cpu_cores"] == os.cpu_count() and config["hardware"]["gpu_count"] == 0
        assert config["stage"] == name.rsplit("-", 1)[1]
    # artifacts link the stages: each input is the upstream artifact's name and digest (offline W&B cannot
    # use_artifact); the digests are those recorded when the upstream stage logged it
    artifacts = read_json(paths.record)["artifacts"]
    assert set(artifacts) == {"data", "train", "eval"} and artifacts["train"]["files"] == ["adapter"]
    assert runs["lin-a-train"]["config"]["inputs"] == {"data": artifacts["data"]}
    assert runs["lin-a-eval"]["config"]["inputs"] == {"data": artifacts["data"], "train": artifacts["train"]}
    assert runs["lin-a-train"]["summary"]["run/device_hours"] > 0


def test_run_json_holds_lineage_usage_and_cost(pipeline) -> None:
    record = read_json(pipeline["a"].record)
    assert set(record["stages"]) == {"data", "train", "eval"}
    assert record["recipe"]["name"] == "lin-a" and record["recipe_hash"] == recipe_hash(pipeline["recipe"])
    assert record["lineage"]["code"]["packages"]["trl"] == metadata.version("trl")
    assert record["lineage"]["data_card_hash"] == record["stages"]["eval"]["lineage"]["data_card_hash"]
    for stage, entry in record["stages"].items():
        usage = entry["usage"]
        assert usage["device"] == "cpu" and usage["seconds"] > 0, stage
        assert usage["device_hours"] == pytest.approx(usage["seconds"] * usage["devices"] / 3600, abs=1e-6)
        assert usage["cost"] == pytest.approx(usage["device_hours"] * 3.0, abs=1e-5)
    totals = record["totals"]
    assert totals["price_per_gpu_hour"] == 3.0 and totals["price_source"] == "recipe tracking.gpu_hour_price"
    assert totals["cpu_hours"] > 0 and totals["gpu_hours"] == 0
    assert totals["cost"] == pytest.approx(totals["cpu_hours"] * 3.0, abs=1e-5)
    assert totals["tokens_seen"] == record["stages"]["train"]["tokens_seen"] > 0
    tokens = record["stages"]["eval"]["usage"]["eval_tokens"]
    assert tokens["prompt"] > 0 and tokens["generated"] > 0
    rows = record["stages"]["eval"]["usage"]["predictions"]
    api = (tokens["prompt"] * 1.5 + tokens["generated"] * 6.0) / 1e6
    assert totals["api_cost"] == pytest.approx(api, abs=1e-6)
    assert totals["api_cost_per_1k_predictions"] == pytest.approx(api / rows * 1000, abs=1e-5)
    assert totals["cost_per_1k_predictions"] > 0


def test_price_from_environment_and_corrupt_record(tmp_path: Path, monkeypatch) -> None:
    paths = RunPaths(tmp_path / "r")
    monkeypatch.setenv("TAILOR_GPU_HOUR_PRICE", "4")
    update_record(paths, "train", {"seconds": 1800.0, "tokens_seen": 10})
    record = read_json(paths.record)
    assert record["totals"]["price_source"] == "env TAILOR_GPU_HOUR_PRICE"
    assert record["totals"]["cost"] == pytest.approx(0.5 * 4, abs=1e-4)  # 0.5 CPU-hours on this CPU machine
    paths.record.write_text('{"stages": {"train": {')  # half-written by something else
    update_record(paths, "eval", {"seconds": 1.0})
    assert set(read_json(paths.record)["stages"]) == {"eval"}
    assert (paths.root / "run.json.corrupt").read_text() == '{"stages": {"train": {'
    monkeypatch.setenv("TAILOR_GPU_HOUR_PRICE", "cheap")
    update_record(paths, "eval", {"seconds": 1.0})
    assert read_json(paths.record)["totals"]["cost"] is None


def test_concurrent_updates_keep_every_stage(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "r")
    threads = [threading.Thread(target=update_record, args=(paths, f"stage{i}", {"seconds": float(i)}))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = read_json(paths.record)
    assert set(record["stages"]) == {f"stage{i}" for i in range(8)}
    assert record["totals"]["seconds"] == pytest.approx(sum(range(8)))


def test_unavailable_backend_is_a_clear_error(tmp_path: Path, tiny_qwen25: Path, monkeypatch) -> None:
    """trackio is optional: a recipe choosing it where the package is missing gets a clear error, not a traceback."""
    import sys

    from tailor.errors import TailorError
    from tailor.tracking import start_stage

    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio raises ImportError
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    recipe = load_recipe(write(tmp_path / "r.yaml", f"""
        name: trk-missing
        output_dir: {tmp_path / 'runs'}
        model: {{name_or_path: {tiny_qwen25}}}
        data: {{sources: [{{path: {data}}}]}}
        tracking: {{backend: trackio}}
    """))
    with pytest.raises(TailorError, match="trackio"):
        start_stage(recipe, "data")


def test_trackio_backend_logs_locally(tmp_path: Path, tiny_qwen25: Path) -> None:
    """trackio (an optional sink) writes its local SQLite store; run in a fresh process so TRACKIO_DIR applies."""
    pytest.importorskip("trackio")
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    path = write(tmp_path / "r.yaml", f"""
        name: trk
        output_dir: {tmp_path / 'runs'}
        model: {{name_or_path: {tiny_qwen25}}}
        data: {{sources: [{{path: {data}}}]}}
        tracking: {{backend: trackio, project: tailor-trackio}}
    """)
    card = tmp_path / "runs" / "trk" / "data" / "data_card.json"
    card.parent.mkdir(parents=True)
    card.write_text('{"rows": 4}')
    script = ("import sys; from tailor.recipe import load_recipe; from tailor.tracking import start_stage, "
              "finish_stage; run = start_stage(load_recipe(sys.argv[1]), 'data'); "
              "run.log({'rows': {'train': 3}, 'table': object()}); finish_stage(run, {'rows': 4})")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRACKIO_DIR": str(tmp_path / "trackio")}
    result = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "trackio" / "tailor-trackio.db").is_file()
    record = read_json(tmp_path / "runs" / "trk" / "run.json")
    assert record["artifacts"]["data"]["name"] == "trk-data" and record["artifacts"]["data"]["digest"]
    assert record["recipe_hash"] == recipe_hash(load_recipe(path))
