"""Two runs on one run folder: the second refuses and names the first; children inherit; a dead holder is replaced."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from faultkit import PY, REPO, assert_clean_error, chat_rows, cli, env, jsonl, write_recipe

from tailor.errors import TailorError
from tailor.locks import INHERIT_ENV, lock_path, read_holder, run_lock


@pytest.fixture
def recipe(tmp_path: Path, tiny_qwen25: Path) -> Path:
    return write_recipe(tmp_path, tiny_qwen25, jsonl(tmp_path / "chat.jsonl", chat_rows(16)))


@pytest.mark.parametrize("module", ["data_prep", "train", "eval", "train.merge"])
def test_second_stage_on_a_busy_run_folder_refuses_naming_the_first(module: str, recipe: Path, tmp_path: Path
                                                                    ) -> None:
    root = tmp_path / "runs" / "fault"
    with run_lock(root, command=["python", "-m", "data_prep", str(recipe)]):
        proc = cli(module, str(recipe), timeout=120)
    assert_clean_error(proc, f"pid {os.getpid()}", f"python -m data_prep {recipe}", "is in use by")
    assert not (root / "data").exists()  # the refused stage wrote nothing


def test_read_only_check_needs_no_lock(recipe: Path, tmp_path: Path) -> None:
    with run_lock(tmp_path / "runs" / "fault"):
        proc = cli("tailor", "check", str(recipe), timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_lock_is_released_after_a_stage_and_a_clean_release_leaves_no_holder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with run_lock(root):
        holder = read_holder(lock_path(root))
        assert holder["pid"] == os.getpid() and os.environ[INHERIT_ENV] == str(lock_path(root).resolve())
    assert read_holder(lock_path(root)) is None and INHERIT_ENV not in os.environ
    with run_lock(root):  # free again
        pass


def test_children_inherit_the_lock_but_unrelated_processes_do_not(tmp_path: Path) -> None:
    root = tmp_path / "run"
    take = f"from tailor.locks import run_lock\nwith run_lock({str(root)!r}): print('inside', flush=True)\n"
    with run_lock(root):
        child = subprocess.run([PY, "-c", take], cwd=REPO, env={**os.environ}, capture_output=True, text=True)
        assert child.returncode == 0 and "inside" in child.stdout, child.stderr
    holder = subprocess.Popen([PY, "-c", take.replace("print('inside', flush=True)", "print('held', flush=True); "
                                                      "__import__('time').sleep(60)")],
                              cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        stranger = subprocess.run([PY, "-c", take], cwd=REPO, env=env(**{INHERIT_ENV: str(lock_path(root).resolve())}),
                                  capture_output=True, text=True)
        assert stranger.returncode != 0 and f"pid {holder.pid}" in stranger.stderr
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path: Path, caplog) -> None:
    root = tmp_path / "run"
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    root.mkdir(parents=True)
    lock_path(root).write_text(json.dumps({"pid": dead.pid, "command": "python -m train r.yaml", "started": 0,
                                           "host": "h"}))
    with caplog.at_level(logging.WARNING, logger="tailor.locks"), run_lock(root):
        assert read_holder(lock_path(root))["pid"] == os.getpid()
    assert f"pid {dead.pid} (python -m train r.yaml" in caplog.text and "no longer running" in caplog.text


def test_busy_lock_raises_tailor_error_in_process(tmp_path: Path) -> None:
    root = tmp_path / "run"
    holder = subprocess.Popen([PY, "-c", "from tailor.locks import run_lock\nimport time\n"
                               f"with run_lock({str(root)!r}, ['python', '-m', 'train', 'x.yaml']):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TailorError, match=rf"pid {holder.pid} \(python -m train x.yaml"):
            with run_lock(root):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(root):  # SIGKILLed holder: the kernel dropped the flock, the lock is taken over
        pass
