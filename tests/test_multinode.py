"""Multi-node on one machine: two `python -m train` launchers (node ranks 0 and 1, one CPU process each) meet at
torchrun's static rendezvous on 127.0.0.1 and train one shared run folder over gloo; the loss history equals one
process at the same global batch (as tests/test_distributed.py checks for two processes on one node).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, chat_rows, write_jsonl, write_tiny_recipe
from data_prep.prepare import prepare
from tailor.recipe import load_recipe
from tailor.runs import read_json

STEPS = 2  # 2 x global batch 8 = 16 rows, well within the training rows
LOSS_TOL = 2e-3  # as tests/test_distributed.py: process counts agree to float-summation order
TIMEOUT_S = 300  # both nodes together; a node whose partner never arrives would wait far longer

# ~40 s of two launchers plus a reference run: in `make test-slow`, to keep the default suite within its budget
pytestmark = pytest.mark.slow


@pytest.fixture
def recipe_path(tmp_path: Path, tiny_qwen25: Path) -> Path:
    """tests/test_distributed.py's recipe, in fp32 on every CPU (precision auto picks bf16 on some)."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(48))
    return write_tiny_recipe(tmp_path / "base.yaml", tiny_qwen25, data, "base", peft={"dropout": 0.0},
                             training={"max_steps": STEPS, "grad_accum": 2, "save_steps": 100, "lr": 5.0e-3,
                                       "warmup_ratio": 0, "mixed_precision": "fp32"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m ARGS` writing to a file (two pipes read one after the other could fill up and block a node); one
    thread each: the test's processes share the machine's cores."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def kill_tree(process: subprocess.Popen) -> None:
    """Kill a launcher and everything it started (its accelerate launch runs in a session of its own)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [*children, process]:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    process.wait(timeout=30)


def run_all(commands: list[list[str]], logs: list[Path]) -> list[int]:
    """Start every command, wait for all within TIMEOUT_S, and kill them all when one fails or time runs out."""
    processes = [start(args, log) for args, log in zip(commands, logs)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while None in (codes := [p.poll() for p in processes]):
            assert not set(codes) - {None, 0} and time.monotonic() < deadline, "a process failed or timed out"
            time.sleep(0.2)
    except AssertionError as err:
        for process in processes:
            kill_tree(process)
        pytest.fail(f"{err}: exit codes {[p.returncode for p in processes]}\n"
                    + "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs))
    finally:
        for process in processes:
            if process.poll() is None:
                kill_tree(process)
    return [p.returncode for p in processes]


def trained(recipe_path: Path, name: str, *extra: str) -> list[str]:
    overrides = [f"name={name}", *extra]
    prepare(load_recipe(recipe_path, overrides))
    return [str(recipe_path), *overrides]


def test_two_nodes_match_one_process_at_the_same_global_batch(recipe_path: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    single = trained(recipe_path, "single")  # 1 process x batch 4 x grad_accum 2 = global batch 8
    nodes = trained(recipe_path, "nodes", "training.grad_accum=1")  # 2 nodes x 1 process x 4 x 1 = 8
    rendezvous = ["--gpus", "1", "--nodes", "2", "--main-ip", "127.0.0.1", "--main-port", str(free_port())]
    # the two node launchers, and beside them the reference: one plain training process (train.run)
    commands = [["train", *nodes, *rendezvous, "--node-rank", str(rank)] for rank in (0, 1)]
    logs = [tmp_path / "node0.log", tmp_path / "node1.log", tmp_path / "single.log"]
    codes = run_all([*commands, ["train.run", *single]], logs)
    out = [log.read_text() for log in logs]
    assert codes == [0, 0, 0], out

    reference = read_json(runs / "single" / "adapter" / "train_metrics.json")
    result = read_json(runs / "nodes" / "adapter" / "train_metrics.json")
    assert result["world_size"] == 2 and result["global_batch"] == reference["global_batch"] == 8
    assert result["strategy"] == "ddp" and len(result["loss_history"]) == STEPS
    assert result["loss_history"] == pytest.approx(reference["loss_history"], abs=LOSS_TOL)
    assert "--num_machines 2 --machine_rank 0" in out[0] and "--machine_rank 1" in out[1]
    assert "-m train.launch" in out[1]  # node 1's process joins node 0's run-folder lock instead of taking it
    launch = runs / "nodes" / "launch"
    assert {p.name for p in launch.glob("accelerate*.yaml")} == {"accelerate.yaml", "accelerate.node1.yaml"}
    assert {p.name for p in launch.glob("heartbeat-rank*.json")} == {"heartbeat-rank0.json", "heartbeat-rank1.json"}
