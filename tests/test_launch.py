"""Launch profiles: strategy choice, refusals before any model is loaded, rendered Accelerate/DeepSpeed configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths
from train.launch import PROFILES, STRATEGIES, Launch, check_launch, launch_command, render_profile, resolve_strategy


@pytest.fixture
def recipe(tiny_recipe):
    return load_recipe(tiny_recipe(rows=16))


def test_auto_strategy_is_single_for_one_process_and_ddp_for_more(recipe) -> None:
    assert resolve_strategy(recipe, None, 1) == "single"
    assert resolve_strategy(recipe, None, 4) == "ddp"
    assert resolve_strategy(recipe, "fsdp", 4) == "fsdp"
    with pytest.raises(TailorError, match="unknown; choose one of single, ddp, fsdp, zero2, zero3"):
        resolve_strategy(recipe, "zero4", 2)


@pytest.mark.parametrize(("strategy", "gpus", "visible", "overrides", "reason"), [
    ("ddp", 8, 2, [], "only 2 GPU\\(s\\) are visible on this node; use GPUS=2"),
    ("ddp", 2, 1, [], "GPUS=2 but only 1 GPU\\(s\\) are visible on this node; use GPUS=1"),
    ("single", 2, 0, [], "STRATEGY=single runs one process"),
    ("zero3", 2, 0, [], "needs CUDA GPUs and none is visible; on CPU use STRATEGY=ddp or STRATEGY=fsdp"),
    ("zero2", 2, 2, ["training.optim=paged_adamw_8bit"], "paged optimizer"),
    ("zero3", 2, 0, ["peft.method=qlora"], "needs CUDA GPUs"),
    ("fsdp", 2, 2, ["peft.method=qlora", "model.dtype=float16"], "use model.dtype=bfloat16"),
])
def test_launches_that_cannot_work_are_refused_with_a_fix(tiny_recipe, strategy, gpus, visible, overrides,
                                                          reason) -> None:
    recipe = load_recipe(tiny_recipe(rows=16), overrides)
    with pytest.raises(TailorError, match=reason):
        check_launch(recipe, Launch(strategy, gpus), gpus_visible=visible)


def test_multi_node_needs_the_rendezvous_address(recipe) -> None:
    with pytest.raises(TailorError, match="--main-ip"):
        check_launch(recipe, Launch("ddp", 8, nodes=2), gpus_visible=8)
    check_launch(recipe, Launch("ddp", 8, nodes=2, node_rank=1, main_ip="10.0.0.1"), gpus_visible=8)
    with pytest.raises(TailorError, match="--node-rank 2: NODES=2 are numbered 0 to 1"):
        check_launch(recipe, Launch("ddp", 8, nodes=2, node_rank=2, main_ip="10.0.0.1"), gpus_visible=8)
    with pytest.raises(TailorError, match="--node-rank 1"):  # a stray --node-rank would skip the run-folder lock
        check_launch(recipe, Launch("single", 1, node_rank=1), gpus_visible=0)


def test_other_nodes_render_their_own_profile_and_join_node_0s_lock(recipe) -> None:
    """Node 0 writes the recorded launch/accelerate.yaml and runs train.run (inheriting its launcher's run-folder
    lock); node R writes accelerate.nodeR.yaml and runs train.launch, which takes no lock (node 0's covers the job)."""
    first = Launch("ddp", 1, nodes=2, node_rank=0, main_ip="127.0.0.1")
    other = Launch("ddp", 1, nodes=2, node_rank=1, main_ip="127.0.0.1")
    profiles = [render_profile(launch, run_paths(recipe)) for launch in (first, other)]
    assert [p.name for p in profiles] == ["accelerate.yaml", "accelerate.node1.yaml"]
    assert profiles[0].read_text() == profiles[1].read_text()
    commands = [launch_command(launch, profile, 0, "r.yaml", []) for launch, profile in zip((first, other), profiles)]
    assert commands[0][-3:] == ["-m", "train.run", "r.yaml"] and commands[1][-3:] == ["-m", "train.launch", "r.yaml"]
    assert "--cpu" not in commands[1]  # several processes: torchrun's rendezvous, gloo without GPUs


def test_refusal_happens_before_any_model_is_loaded(tiny_recipe) -> None:
    """The CLI answers in seconds with exit code 2 and no traceback (the model is never touched)."""
    path = tiny_recipe(rows=16)
    from data_prep.prepare import prepare

    prepare(load_recipe(path))
    result = subprocess.run([sys.executable, "-m", "train", str(path), "--gpus", "2", "--strategy", "zero3"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "STRATEGY=zero3 (DeepSpeed) needs CUDA GPUs" in result.stderr
    assert not (run_paths(load_recipe(path)).root / "launch").exists()


def test_rendered_profile_and_command(recipe) -> None:
    launch = Launch("fsdp", 4, nodes=2, node_rank=1, main_ip="10.1.2.3")
    profile = render_profile(launch, run_paths(recipe))
    config = yaml.safe_load(profile.read_text())
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 8 and config["num_machines"] == 2
    fsdp = config["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_cpu_ram_efficient_loading"] is True
    command = launch_command(launch, profile, 4, "r.yaml", ["training.lr=1e-4"])
    joined = " ".join(command)
    assert f"--config_file {profile}" in joined and "--num_processes 8 --num_machines 2" in joined
    assert "--machine_rank 1 --main_process_ip 10.1.2.3 --main_process_port 29500" in joined
    assert command[-3:] == ["r.yaml", "training.lr=1e-4"] or command[-2:] == ["r.yaml", "training.lr=1e-4"]
    zero = yaml.safe_load(render_profile(Launch("zero3", 2), run_paths(recipe)).read_text())
    assert Path(zero["deepspeed_config"]["deepspeed_config_file"]).is_absolute()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_profile_is_a_valid_accelerate_config(strategy) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(PROFILES / f"{strategy}.yaml"))
    assert config.num_machines == 1


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_pass_deepspeeds_own_validation(stage) -> None:
    """ZeRO cannot run on CPU here: the config is filled the way the HF trainer fills it and parsed by DeepSpeed."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    raw = json.loads((PROFILES / f"zero{stage}.json").read_text())
    hf = HfTrainerDeepSpeedConfig(raw)
    args = TrainingArguments(output_dir="/tmp/tailor-ds", per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, use_cpu=True, report_to=[])
    hf.trainer_config_process(args)

    class Config:  # the model facts trainer_config_finalize reads for the "auto" bucket sizes
        hidden_size = 896

    class Model:
        config = Config()

    hf.trainer_config_finalize(args, Model(), num_training_steps=10)
    config = dict(hf.config, train_batch_size=8)
    parsed = DeepSpeedConfig(config)
    assert parsed.zero_optimization_stage == stage and parsed.train_micro_batch_size_per_gpu == 4
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save  # the adapter is saved whole
    with pytest.raises(Exception, match="Extra inputs are not permitted"):  # the validation is real
        DeepSpeedConfig({**config, "zero_optimization": {**config["zero_optimization"], "stag": stage}})
