"""The SLURM script `make slurm` renders: valid bash, one `python -m train` per node with the rendezvous on node 0,
and a requeue when training exits with the preemption code. Run with stand-in `srun`/`scontrol` commands."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tailor.recipe import load_recipe
from tailor.runs import run_paths
from train.checkpoints import PREEMPTED_EXIT_CODE


def render(path: Path, *args: str) -> Path:
    result = subprocess.run([sys.executable, "-m", "train.slurm", str(path), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return run_paths(load_recipe(path)).root / "launch" / "train.sbatch"


def stand_ins(folder: Path, srun_exit: int) -> dict[str, str]:
    """`srun` records the per-node command and exits with `srun_exit`; `scontrol` answers hostnames and requeue."""
    folder.mkdir()
    log = folder / "calls.log"
    (folder / "srun").write_text(f'#!/bin/bash\necho "srun $*" >> {log}\nexit {srun_exit}\n')
    (folder / "scontrol").write_text(f'#!/bin/bash\necho "scontrol $*" >> {log}\n'
                                     'if [ "$1" = show ]; then echo node-a; echo node-b; fi\n')
    for name in ("srun", "scontrol"):
        (folder / name).chmod((folder / name).stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]",
            "SLURM_JOB_ID": "4242"}


@pytest.mark.parametrize(("srun_exit", "script_exit", "requeued"), [(0, 0, False), (PREEMPTED_EXIT_CODE, 0, True),
                                                                     (1, 1, False)])
def test_rendered_script_runs_train_per_node_and_requeues_on_preemption(tiny_recipe, tmp_path, srun_exit,
                                                                        script_exit, requeued) -> None:
    path = tiny_recipe(rows=16)
    script = render(path, "training.lr=1e-4", "--nodes", "2", "--gpus-per-node", "8", "--strategy", "fsdp",
                    "--sbatch=--partition=gpu")
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --signal=USR1@120", "#SBATCH --requeue",
                 "#SBATCH --partition=gpu"):
        assert line in text
    env = stand_ins(tmp_path / "bin", srun_exit)
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == script_exit, result.stdout + result.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text()
    assert f"-m train {path} training.lr=1e-4 --gpus 8 --nodes 2" in calls
    assert "--node-rank $SLURM_NODEID --main-ip $MAIN_IP --main-port 29500 --strategy fsdp" in calls
    assert ("scontrol requeue 4242" in calls) == requeued


def test_slurm_refuses_a_strategy_that_cannot_work(tiny_recipe) -> None:
    path = tiny_recipe(rows=16)
    result = subprocess.run([sys.executable, "-m", "train.slurm", str(path), "--nodes", "2", "--gpus-per-node", "4",
                             "--strategy", "single"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "STRATEGY=single runs one process" in result.stderr
