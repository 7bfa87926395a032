"""Helpers of the fault suite: run the real CLIs in subprocesses, kill them, fill their disk, read what is left."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TRACEBACK = "Traceback (most recent call last)"


from conftest import write_jsonl as jsonl  # noqa: E402, F401  (the shared JSONL writer, re-exported)
from conftest import write_tiny_recipe  # noqa: E402


def env(**extra: str) -> dict[str, str]:
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_SILENT": "true",
            "TAILOR_CACHE": os.environ.get("TAILOR_CACHE", str(REPO / ".cache")), "PYTHONUNBUFFERED": "1"}
    base.pop("TAILOR_RUN_LOCK", None)
    return {**base, **extra}


def cli(module: str, *args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root, output captured."""
    return subprocess.run([PY, "-m", module, *args], cwd=REPO, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, an `error:` line naming every needle, and no traceback anywhere in the output."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out[-3000:]}"
    assert TRACEBACK not in out, out[-3000:]
    assert "error:" in proc.stderr, out[-3000:]
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr[-3000:]}"


def kill_when(command: list[str], ready: Callable[[], bool], delay: float = 0.0, timeout: float = 300,
              **extra_env: str) -> tuple[int, str]:
    """Start `command` in its own process group, wait until `ready()`, sleep `delay`, SIGKILL the whole group.

    Returns (exit code, output). The exit code is -9 when the kill landed, 0 when the command finished first."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fault-{os.getpid()}-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env(**extra_env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not ready():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{command} never became ready")
                time.sleep(0.02)
            time.sleep(delay)
            kill_tree(proc.pid)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()
    text = log.read_text(errors="replace")
    log.unlink()
    return code, text


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (the training launcher starts its workers in their own session), as
    a machine crash or the OOM killer would: all at once, nothing gets to clean up."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def tree_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> digest), optionally skipping top-level names."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in skip:
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def write_recipe(folder: Path, model: Path, data: Path, name: str = "fault", extra: str = "") -> Path:
    """A small recipe on a tiny model (tests/conftest.py's); the run folder is folder/runs/<name>."""
    return write_tiny_recipe(folder / f"{name}.yaml", model, data, name, tail=extra,
                             eval={"metrics": ["exact_match", "json_valid"], "max_new_tokens": 8, "batch_size": 8,
                                   "max_rows": 8})


def chat_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Say the number {i} as JSON, please ({i * 7919 % 1000})."},
                          {"role": "assistant", "content": json.dumps({"number": i})}]}
            for i in range(offset, offset + n)]


# ---------------------------------------------------------------- a full disk, without privileges where possible


def can_unshare() -> bool:
    """Whether an unprivileged user + mount namespace with a private tmpfs can be made here."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\""],
                           capture_output=True, text=True)
    return probe.returncode == 0


def run_on_full_disk(run_root: Path, command: list[str], free_kb: int, state_out: Path) -> subprocess.CompletedProcess:
    """Run `command` with `run_root` on a tmpfs that has only `free_kb` KiB left (unshare: no root needed).

    The run folder is copied onto the tmpfs first, the rest of the tmpfs is filled, the command runs, then the run
    folder (filler removed) is copied back to `state_out` so the test can inspect what the failed stage left."""
    script = f"""
set -e
mkdir -p "{run_root}"
cp -a "{run_root}" "{state_out}.orig"
mount -t tmpfs -o size=64m tmpfs "{run_root}"
cp -a "{state_out}.orig/." "{run_root}/"
rm -rf "{state_out}.orig"
free=$(df -k --output=avail "{run_root}" | tail -1)
fill=$((free - {free_kb}))
if [ "$fill" -gt 0 ]; then dd if=/dev/zero of="{run_root}/.filler" bs=1k count="$fill" status=none 2>/dev/null || true; fi
set +e
"$@"
code=$?
rm -f "{run_root}/.filler"
cp -a "{run_root}/." "{state_out}/"
exit $code
"""
    state_out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script, "full-disk",
                           *command], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
