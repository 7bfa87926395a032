"""SIGKILL (all processes of a stage at once, as a crash or the OOM killer) at chosen and at random points of
data prep, training and eval; then the same command again. Nothing half-written may ever be trusted, and the rerun
must finish with the same result as a run that was never interrupted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from faultkit import PY, chat_rows, cli, jsonl, kill_when, write_recipe


ROWS = 600


def rows_of(parquet: Path) -> list[dict]:
    """The rows of a prepared split, without `source` (the input file's path differs between two run folders)."""
    import pyarrow.parquet as pq

    return [{k: v for k, v in row.items() if k != "source"} for row in pq.read_table(parquet).to_pylist()]


def assert_data_whole_or_absent(run: Path) -> str:
    """The prepared data is either absent or complete and self-consistent; returns which."""
    data = run / "data"
    if not (data / "manifest.json").is_file():
        assert not (data / "train.parquet").exists() or not data.exists() or \
            not list(data.glob("*.parquet")), f"parquet without a manifest in {data}"
        return "absent"
    manifest = json.loads((data / "manifest.json").read_text())
    assert len(rows_of(data / "train.parquet")) == manifest["rows"]["train"]
    assert len(rows_of(data / "heldout.parquet")) == manifest["rows"]["heldout"]
    json.loads((data / "data_card.json").read_text())
    return "complete"


@pytest.fixture
def data_recipe(tmp_path: Path, tiny_qwen25: Path) -> Path:
    return write_recipe(tmp_path, tiny_qwen25, jsonl(tmp_path / "chat.jsonl", chat_rows(ROWS)))


def _reference_data(tmp_path: Path, tiny_qwen25: Path) -> dict:
    ref = write_recipe(tmp_path / "ref", tiny_qwen25, jsonl(tmp_path / "ref" / "chat.jsonl", chat_rows(ROWS)),
                       name="fault")
    assert cli("data_prep", str(ref)).returncode == 0
    run = tmp_path / "ref" / "runs" / "fault" / "data"
    return {"train": rows_of(run / "train.parquet"), "heldout": rows_of(run / "heldout.parquet")}


def _kill_and_rerun_data(recipe: Path, ready, delay: float) -> str:
    run = recipe.parent / "runs" / "fault"
    code, out = kill_when([PY, "-m", "data_prep", str(recipe), "--force"], ready, delay=delay)
    state = assert_data_whole_or_absent(run)
    return f"{code}:{state}"


@pytest.mark.slow  # ~35 s: with the other SIGKILL tests in make test-faults / test-slow
def test_sigkill_while_data_is_being_written_leaves_it_absent_then_rerun_completes(
        data_recipe: Path, tmp_path: Path, tiny_qwen25: Path) -> None:
    run = tmp_path / "runs" / "fault"
    # the kill lands while the new data folder is being assembled (atomic_dir's temporary sibling exists)
    outcome = _kill_and_rerun_data(data_recipe, lambda: any(run.glob(".data.*.tmp")), delay=0.0)
    assert outcome.startswith("-9:"), outcome
    again = cli("data_prep", str(data_recipe))
    assert again.returncode == 0, again.stderr[-2000:]
    assert assert_data_whole_or_absent(run) == "complete"
    reference = _reference_data(tmp_path, tiny_qwen25)
    assert rows_of(run / "data" / "train.parquet") == reference["train"]
    assert rows_of(run / "data" / "heldout.parquet") == reference["heldout"]


@pytest.mark.slow
def test_sigkill_at_random_points_of_data_prep_over_earlier_data(data_recipe: Path, tmp_path: Path,
                                                                   tiny_qwen25: Path) -> None:
    """Earlier prepared data exists; each kill must leave it whole (old) or leave the new one whole, never a mix."""
    run = tmp_path / "runs" / "fault"
    assert cli("data_prep", str(data_recipe)).returncode == 0
    rng = random.Random(8)
    outcomes = []
    for _ in range(6):
        outcomes.append(_kill_and_rerun_data(data_recipe, lambda: any(run.glob(".data-work.*")),
                                             delay=rng.uniform(0.0, 4.0)))
    again = cli("data_prep", str(data_recipe))
    assert again.returncode == 0 and assert_data_whole_or_absent(run) == "complete"
    reference = _reference_data(tmp_path, tiny_qwen25)
    assert rows_of(run / "data" / "train.parquet") == reference["train"]
    print("data kills:", outcomes)


# ---------------------------------------------------------------- training


def train_recipe(folder: Path, model: Path, steps: int = 6) -> Path:
    """A tiny training run that saves a checkpoint at every step."""
    path = write_recipe(folder, model, jsonl(folder / "chat.jsonl", chat_rows(64)))
    path.write_text(path.read_text().replace("  max_steps: 2\n", f"  max_steps: {steps}\n  save_steps: 1\n"
                                             "  save_total_limit: 3\n  lr: 1.0e-3\n"))
    return path


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_checkpoint_resumes_from_the_last_complete_one_and_matches_an_uninterrupted_run(
        tmp_path: Path, tiny_qwen25: Path) -> None:
    import torch

    ref = train_recipe(tmp_path / "ref", tiny_qwen25)
    assert cli("data_prep", str(ref)).returncode == 0
    done = cli("train", str(ref))
    assert done.returncode == 0, done.stderr[-3000:]
    recipe = train_recipe(tmp_path / "killed", tiny_qwen25)
    assert cli("data_prep", str(recipe)).returncode == 0
    ckpts = tmp_path / "killed" / "runs" / "fault" / "checkpoints"

    def half_written() -> bool:  # a checkpoint folder exists whose completion marker is not written yet
        return any(c.is_dir() and not (c / "tailor_checkpoint.json").exists() and c.name != "checkpoint-1"
                   for c in ckpts.glob("checkpoint-*"))

    code, _ = kill_when([PY, "-m", "train", str(recipe)], half_written, delay=0.0)
    assert code == -9
    complete = sorted(int(c.name.split("-")[1]) for c in ckpts.glob("checkpoint-*")
                      if (c / "tailor_checkpoint.json").is_file())
    incomplete = [c.name for c in ckpts.glob("checkpoint-*") if not (c / "tailor_checkpoint.json").is_file()]
    assert complete and incomplete, (complete, incomplete)
    again = cli("train", str(recipe))
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert f"resuming from {ckpts / f'checkpoint-{complete[-1]}'} (step {complete[-1]})" in out
    assert "skipped incomplete checkpoint" in out
    metrics = json.loads((tmp_path / "killed" / "runs" / "fault" / "adapter" / "train_metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == complete[-1]
    got, want = adapter_tensors(tmp_path / "killed" / "runs" / "fault" / "adapter"), \
        adapter_tensors(tmp_path / "ref" / "runs" / "fault" / "adapter")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sigkill_at_random_training_points_then_resume_finishes(tmp_path: Path, tiny_qwen25: Path) -> None:
    recipe = train_recipe(tmp_path, tiny_qwen25, steps=8)
    assert cli("data_prep", str(recipe)).returncode == 0
    ckpts = tmp_path / "runs" / "fault" / "checkpoints"
    rng = random.Random(3)
    for _ in range(3):
        kill_when([PY, "-m", "train", str(recipe)], lambda: any(ckpts.glob("checkpoint-*")),
                  delay=rng.uniform(0.0, 3.0))
    again = cli("train", str(recipe))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    metrics = json.loads((tmp_path / "runs" / "fault" / "adapter" / "train_metrics.json").read_text())
    assert metrics["steps"] == 8


# ---------------------------------------------------------------- eval


@pytest.mark.slow
def test_sigkill_during_eval_then_rerun_writes_whole_results(tmp_path: Path, tiny_qwen25: Path) -> None:
    recipe = write_recipe(tmp_path, tiny_qwen25, jsonl(tmp_path / "chat.jsonl", chat_rows(64)))
    assert cli("data_prep", str(recipe)).returncode == 0
    assert cli("train", str(recipe)).returncode == 0
    run = tmp_path / "runs" / "fault"
    first = cli("eval", str(recipe))
    assert first.returncode == 0, first.stderr[-2000:]
    before = json.loads((run / "eval" / "results.json").read_text())
    rng = random.Random(5)
    for _ in range(3):
        kill_when([PY, "-m", "eval", str(recipe)], lambda: True, delay=rng.uniform(1.0, 12.0))
        results = json.loads((run / "eval" / "results.json").read_text())  # whole JSON after every kill
        assert results["rows"] == before["rows"]
        lines = (run / "eval" / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == before["rows"] and all(json.loads(line) for line in lines)
    again = cli("eval", str(recipe))
    assert again.returncode == 0
    after = json.loads((run / "eval" / "results.json").read_text())
    assert after["models"]["tuned"] == before["models"]["tuned"]
