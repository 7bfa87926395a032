"""A full disk during each stage: a clear error (exit 2, no traceback) and every earlier artifact intact.

The run folder sits on a private tmpfs with a few KiB left, made in an unprivileged user + mount namespace
(`unshare --user --map-root-user --mount`: no root needed where the kernel allows user namespaces, as on most CI
runners); where it does not, the tests are skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultkit import PY, TRACEBACK, can_unshare, chat_rows, cli, jsonl, run_on_full_disk, tree_digest, write_recipe

pytestmark = pytest.mark.skipif(not can_unshare(), reason="no unprivileged user+mount namespace (unshare) here")

FREE_KB = 8


def assert_disk_full_error(proc) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out[-4000:]}"
    assert TRACEBACK not in out, out[-4000:]
    assert "error: the disk is full" in proc.stderr, out[-4000:]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "fault"


@pytest.mark.slow  # ~17 s: in make test-faults / test-slow with the train and eval cases
def test_full_disk_during_data_prep_keeps_the_earlier_data(tmp_path: Path, tiny_qwen25: Path, run_dir: Path) -> None:
    data = jsonl(tmp_path / "chat.jsonl", chat_rows(200))
    recipe = write_recipe(tmp_path, tiny_qwen25, data)
    assert cli("data_prep", str(recipe)).returncode == 0
    before = tree_digest(run_dir / "data")
    jsonl(data, chat_rows(260))  # new input: the stage must prepare again, on a full disk
    proc = run_on_full_disk(run_dir, [PY, "-m", "data_prep", str(recipe)], FREE_KB, tmp_path / "after")
    assert_disk_full_error(proc)
    assert tree_digest(tmp_path / "after" / "data") == before
    assert not [p for p in (tmp_path / "after").iterdir() if p.name.startswith((".data-work", ".data."))]


@pytest.mark.slow
def test_full_disk_during_training_keeps_data_and_reports(tmp_path: Path, tiny_qwen25: Path, run_dir: Path) -> None:
    recipe = write_recipe(tmp_path, tiny_qwen25, jsonl(tmp_path / "chat.jsonl", chat_rows(64)))
    assert cli("data_prep", str(recipe)).returncode == 0
    before = tree_digest(run_dir / "data")
    proc = run_on_full_disk(run_dir, [PY, "-m", "train", str(recipe)], FREE_KB, tmp_path / "after")
    assert_disk_full_error(proc)
    assert tree_digest(tmp_path / "after" / "data") == before
    assert not (tmp_path / "after" / "adapter").exists()
    again = cli("train", str(recipe))  # space is back: the same command trains
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_full_disk_during_eval_keeps_adapter_data_and_earlier_results(tmp_path: Path, tiny_qwen25: Path,
                                                                     run_dir: Path) -> None:
    recipe = write_recipe(tmp_path, tiny_qwen25, jsonl(tmp_path / "chat.jsonl", chat_rows(64)))
    for stage in ("data_prep", "train", "eval"):
        done = cli(stage, str(recipe))
        assert done.returncode == 0, done.stderr[-3000:]
    before = tree_digest(run_dir, skip=("run.json", ".lock", "launch", "wandb"))
    (run_dir / "eval" / "results.json").write_text(json.dumps({"marker": "earlier results"}))
    before["eval/results.json"] = __import__("hashlib").sha256(
        (run_dir / "eval" / "results.json").read_bytes()).hexdigest()
    proc = run_on_full_disk(run_dir, [PY, "-m", "eval", str(recipe), "eval.max_rows=7"], FREE_KB,
                            tmp_path / "after")
    assert_disk_full_error(proc)
    after = tree_digest(tmp_path / "after", skip=("run.json", ".lock", "launch", "wandb"))
    assert after == before
