"""Real multi-process training on CPU (gloo): DDP and FSDP2 match one process at the same global batch; SIGTERM
saves a checkpoint and the resumed run ends with the same adapter; a 2-process run resumes on 1 process; QLoRA + FSDP2.

Every run goes through `python -m train` (the launcher users call), so the real `accelerate launch` is exercised.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, chat_rows, write_jsonl, write_tiny_recipe
from data_prep.prepare import prepare
from tailor.recipe import load_recipe
from tailor.runs import read_json
from train.checkpoints import PREEMPTED_EXIT_CODE

STEPS = 5  # 5 x global batch 8 = 40 rows <= the 41+ training rows: no partial (padded) last batch
# Losses of different process counts agree to float-summation order; adapters after 6 steps at lr 5e-3 to this.
LOSS_TOL = 2e-3
WEIGHT_TOL = 2e-4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_qwen25: Path) -> Path:
    """One prepared data set shared by all runs of this module (runs differ only in name and launch)."""
    root = tmp_path_factory.mktemp("dist")
    data = write_jsonl(root / "chat.jsonl", chat_rows(64))
    write_tiny_recipe(root / "base.yaml", tiny_qwen25, data, "base", peft={"dropout": 0.0},
                      training={"max_steps": STEPS, "grad_accum": 2, "save_steps": 2, "lr": 5.0e-3, "warmup_ratio": 0})
    return root


def recipe_for(workdir: Path, name: str, *extra: str) -> tuple[Path, list[str]]:
    overrides = [f"name={name}", *extra]
    prepare(load_recipe(workdir / "base.yaml", overrides))
    return workdir / "base.yaml", overrides


def launch(path: Path, overrides: list[str], *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "train", str(path), *overrides, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(path: Path, overrides: list[str], *args: str) -> str:
    process = launch(path, overrides, *args)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-4000:]
    return out


def metrics(workdir: Path, name: str) -> dict:
    return read_json(workdir / "runs" / name / "adapter" / "train_metrics.json")


def adapter(workdir: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(workdir / "runs" / name / "adapter" / "adapter_model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(workdir: Path) -> dict:
    """The reference: one process, batch 4 x grad_accum 2 = global batch 8."""
    path, overrides = recipe_for(workdir, "single")
    run(path, overrides)
    return metrics(workdir, "single")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_at_the_same_global_batch(workdir, single, strategy) -> None:
    path, overrides = recipe_for(workdir, strategy, "training.grad_accum=1")  # 2 processes x 4 x 1 = 8
    out = run(path, overrides, "--gpus", "2", "--strategy", strategy)
    result = metrics(workdir, strategy)
    assert result["world_size"] == 2 and result["global_batch"] == single["global_batch"] == 8
    assert result["strategy"] == strategy and "--num_processes 2" in out
    assert result["loss_history"] == pytest.approx(single["loss_history"], abs=LOSS_TOL)
    assert max_diff(adapter(workdir, strategy), adapter(workdir, "single")) < WEIGHT_TOL
    config = (workdir / "runs" / strategy / "launch" / "accelerate.yaml").read_text()
    assert ("distributed_type: FSDP" in config) == (strategy == "fsdp")


def wait_for_checkpoint(workdir: Path, name: str, process: subprocess.Popen, step: int) -> None:
    marker = workdir / "runs" / name / "checkpoints" / f"checkpoint-{step}" / "tailor_checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists():
        assert process.poll() is None, process.communicate()[0][-4000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


def interrupt(workdir: Path, name: str, process: subprocess.Popen, sig: int) -> str:
    wait_for_checkpoint(workdir, name, process, 2)
    process.send_signal(sig)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == PREEMPTED_EXIT_CODE, out[-4000:]
    assert "checkpoint saved" in out
    assert not (workdir / "runs" / name / "adapter").exists()  # stopped before the end: no adapter yet
    return out


@pytest.mark.slow  # ~60 s of launches on a slow CPU: in make test-slow with the other resume tests
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_matches(workdir, single) -> None:
    path, overrides = recipe_for(workdir, "preempted")
    interrupt(workdir, "preempted", launch(path, overrides), signal.SIGTERM)
    out = run(path, overrides)
    assert "resuming from" in out
    result = metrics(workdir, "preempted")
    assert 2 <= result["resumed_from_step"] < STEPS and result["steps"] == STEPS
    assert max_diff(adapter(workdir, "preempted"), adapter(workdir, "single")) < WEIGHT_TOL
    again = run(path, overrides)  # finished: a rerun does nothing
    assert "already trained" in again


@pytest.mark.slow
def test_two_process_run_resumes_on_one_process_with_the_same_global_batch(workdir, single) -> None:
    path, overrides = recipe_for(workdir, "shrink", "training.grad_accum=1")
    interrupt(workdir, "shrink", launch(path, overrides, "--gpus", "2"), signal.SIGUSR1)
    out = run(path, overrides)  # now on one process: grad_accum becomes 2 to keep the global batch of 8
    assert "with grad_accum 2 (was 2 x accum 1), same global batch 8" in out
    result = metrics(workdir, "shrink")
    assert result["world_size"] == 1 and result["grad_accum"] == 2 and result["steps"] == STEPS
    assert max_diff(adapter(workdir, "shrink"), adapter(workdir, "single")) < WEIGHT_TOL


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_and_resume_false_starts_over(workdir) -> None:
    path, overrides = recipe_for(workdir, "changed")
    interrupt(workdir, "changed", launch(path, overrides), signal.SIGTERM)
    process = launch(path, [*overrides, "training.lr=1e-3"])
    out, _ = process.communicate(timeout=300)
    assert process.returncode != 0 and "training.lr: 0.005 -> 0.001" in out and "training.resume=false" in out
    out = run(path, [*overrides, "training.lr=1e-3", "training.resume=false"])
    assert "resuming" not in out and metrics(workdir, "changed")["resumed_from_step"] is None


@pytest.mark.slow
def test_half_written_checkpoint_is_skipped(workdir, single) -> None:
    path, overrides = recipe_for(workdir, "torn")
    interrupt(workdir, "torn", launch(path, overrides), signal.SIGTERM)
    checkpoints = workdir / "runs" / "torn" / "checkpoints"
    latest = max((p for p in checkpoints.glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
    (latest / "tailor_checkpoint.json").unlink()  # as if killed while saving
    (latest / "optimizer.pt").write_bytes(b"truncated")
    out = run(path, overrides)
    assert f"skipped incomplete checkpoint(s) .incomplete-{latest.name}" in out
    assert (checkpoints / f".incomplete-{latest.name}").is_dir()
    assert metrics(workdir, "torn")["resumed_from_step"] < int(latest.name.split("-")[1])
    assert max_diff(adapter(workdir, "torn"), adapter(workdir, "single")) < WEIGHT_TOL


@pytest.mark.slow  # ~25 s; in make test-slow (QLoRA alone and FSDP2 with LoRA stay in the default suite)
def test_qlora_with_fsdp2_trains_with_a_finite_loss(workdir, tiny_qwen3: Path) -> None:
    path, overrides = recipe_for(workdir, "qlora-fsdp", "peft.method=qlora", f"model.name_or_path={tiny_qwen3}",
                                 "training.grad_accum=1", "training.max_steps=2")
    run(path, overrides, "--gpus", "2", "--strategy", "fsdp")
    result = metrics(workdir, "qlora-fsdp")
    assert result["world_size"] == 2 and result["steps"] == 2
    assert all(loss == loss and abs(loss) < 1e3 for loss in result["loss_history"])  # finite, not NaN
    config = json.loads((workdir / "runs" / "qlora-fsdp" / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16


@pytest.mark.slow
def test_a_stalled_rank_is_named_when_the_collective_times_out(workdir) -> None:
    """Rank 1 stops after step 2 (fault injection); rank 0 times out in the next collective after 10 s."""
    path, overrides = recipe_for(workdir, "stall", "training.grad_accum=1", "training.collective_timeout_s=10")
    process = launch(path, overrides, "--gpus", "2", env={"TAILOR_FAULT_STALL": "1:2:600"})
    out, _ = process.communicate(timeout=600)
    assert process.returncode not in (0, PREEMPTED_EXIT_CODE), out[-3000:]
    assert "stalled: rank 1 (host" in out and "finished step 2" in out, out[-3000:]
    assert "the other ranks were waiting at the sync after step 2" in out, out[-3000:]


@pytest.fixture(scope="module")
def pairs_workdir(tmp_path_factory, tiny_qwen25: Path) -> Path:
    """Preference pairs and GRPO prompts on the tiny model, shared by the method runs below."""
    from test_methods import pairs

    root = tmp_path_factory.mktemp("dist-methods")
    data = write_jsonl(root / "pairs.jsonl", pairs(48))
    write_tiny_recipe(root / "dpo.yaml", tiny_qwen25, data, "dpo", peft={"dropout": 0.0},
                      data_keys={"sources": [{"path": str(data), "format": "preference"}]},
                      training={"method": "dpo", "max_steps": 4, "grad_accum": 2, "lr": 5.0e-3, "warmup_ratio": 0})
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": f"Say yes {i}.", "completion": "yes"} for i in range(48)])
    write_tiny_recipe(root / "grpo.yaml", tiny_qwen25, prompts, "grpo", peft={"dropout": 0.0},
                      data_keys={"sources": [{"path": str(prompts), "format": "prompt_completion"}]},
                      training={"method": "grpo", "max_steps": 3, "batch_size": 4, "grad_accum": 2, "lr": 5.0e-3,
                                "warmup_ratio": 0},
                      tail="grpo:\n  rewards: [exact_match, token_f1]\n  num_generations: 4\n"
                           "  max_completion_length: 4\n")
    return root


@pytest.fixture(scope="module")
def dpo_single(pairs_workdir: Path) -> dict:
    """DPO's reference run: one process, batch 4 x grad_accum 2 = global batch 8."""
    overrides = ["name=dpo-1"]
    prepare(load_recipe(pairs_workdir / "dpo.yaml", overrides))
    run(pairs_workdir / "dpo.yaml", overrides)
    return metrics(pairs_workdir, "dpo-1")


@pytest.mark.slow  # ~40 s of launches each: in make test-slow (SFT's DDP and FSDP2 matches stay in the default suite)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dpo_on_two_processes_matches_one_process(pairs_workdir: Path, dpo_single: dict, strategy: str) -> None:
    path, name = pairs_workdir / "dpo.yaml", f"dpo-{strategy}"
    overrides = [f"name={name}", "training.grad_accum=1"]
    prepare(load_recipe(path, overrides))
    run(path, overrides, "--gpus", "2", "--strategy", strategy)
    one, two = dpo_single, metrics(pairs_workdir, name)
    assert two["world_size"] == 2 and one["global_batch"] == two["global_batch"] == 8 and two["strategy"] == strategy
    assert two["loss_history"] == pytest.approx(one["loss_history"], abs=LOSS_TOL)
    for curve in ("rewards/margins", "rewards/chosen"):  # trl gathers the method's signals across processes
        assert [v for _, v in two["curves"][curve]] == pytest.approx([v for _, v in one["curves"][curve]],
                                                                      abs=LOSS_TOL)
    assert max_diff(adapter(pairs_workdir, name), adapter(pairs_workdir, "dpo-1")) < WEIGHT_TOL


@pytest.mark.slow
def test_dpo_stopped_by_sigterm_resumes_on_two_processes_and_matches(pairs_workdir: Path, dpo_single: dict) -> None:
    path, overrides = pairs_workdir / "dpo.yaml", ["name=dpo-resume", "training.save_steps=2"]
    prepare(load_recipe(path, overrides))
    interrupt(pairs_workdir, "dpo-resume", launch(path, overrides), signal.SIGTERM)
    out = run(path, overrides, "--gpus", "2")
    resumed = metrics(pairs_workdir, "dpo-resume")
    assert "resuming from" in out and resumed["resumed_from_step"] >= 2 and resumed["world_size"] == 2
    assert resumed["global_batch"] == dpo_single["global_batch"] and resumed["grad_accum"] == 1
    assert max_diff(adapter(pairs_workdir, "dpo-resume"), adapter(pairs_workdir, "dpo-1")) < WEIGHT_TOL


@pytest.mark.slow
def test_grpo_on_two_processes_scores_the_same_global_batch(pairs_workdir: Path) -> None:
    """GRPO samples its answers, and two processes draw other samples than one: the runs agree in shape (global
    batch, groups, rewards gathered from every process), not in values."""
    path = pairs_workdir / "grpo.yaml"
    for name, extra, args in (("grpo-1", [], []), ("grpo-2", ["training.grad_accum=1"], ["--gpus", "2"])):
        overrides = [f"name={name}", *extra]
        prepare(load_recipe(path, overrides))
        run(path, overrides, *args)
    one, two = metrics(pairs_workdir, "grpo-1"), metrics(pairs_workdir, "grpo-2")
    assert two["world_size"] == 2 and one["global_batch"] == two["global_batch"] == 8
    assert one["steps"] == two["steps"] == 3
    for result in (one, two):
        assert {"rewards/exact_match/mean", "rewards/token_f1/mean", "reward_std"} <= set(result["curves"])
        assert all(0.0 <= v <= 1.0 for _, v in result["curves"]["rewards/token_f1/mean"])
