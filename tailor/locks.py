"""One writer per run folder: a `filelock` lock on `runs/<name>/.lock`, holding the pid, command and start time of its
holder. A second stage on the same run folder refuses, naming the holder; processes the holder starts (`accelerate
launch` workers) inherit the lock through `TAILOR_RUN_LOCK`. The kernel drops the flock when its holder dies (even by
SIGKILL), so a lock left by a dead process is taken over, with a note naming it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tailor.errors import TailorError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
INHERIT_ENV = "TAILOR_RUN_LOCK"


def lock_path(run_root: Path) -> Path:
    return Path(run_root) / LOCK_NAME


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file (pid, command, started), or None when empty or unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        holder = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _ancestors() -> set[int]:
    """Pids of this process's parents, grandparents, ... (psutil, so it works beyond Linux)."""
    import psutil

    try:
        return {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        return {os.getppid()}


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder['pid']} ({holder.get('command', '?')}, started {started} on {holder.get('host', '?')})"


@contextmanager
def run_lock(run_root: Path, command: list[str] | None = None) -> Iterator[Path]:
    """Hold the run folder's lock for the duration of the block; raise TailorError when another process holds it."""
    path = lock_path(run_root).resolve()
    if _inherited(path):
        yield path
        return
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, blocking=False, preserve_lock_file=True)  # the file keeps the holder's name
    try:
        lock.acquire()
    except Timeout:
        raise TailorError(_busy_message(path)) from None
    fd = os.open(path, os.O_RDWR)
    try:
        stale = read_holder(path)
        if stale and stale.get("pid") != os.getpid():
            log.warning("run folder %s: taking over the lock of %s, which is no longer running (it ended without "
                        "releasing it; its outputs are checked by each stage as usual)", run_root, describe(stale))
        _write_holder(fd, command)
        previous = os.environ.get(INHERIT_ENV)
        os.environ[INHERIT_ENV] = str(path)
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop(INHERIT_ENV, None)
            else:
                os.environ[INHERIT_ENV] = previous
            os.ftruncate(fd, 0)  # a clean release leaves an empty file: nothing stale to report
    finally:
        os.close(fd)
        lock.release()


def _inherited(path: Path) -> bool:
    """True when a parent of this process holds this very lock (set TAILOR_RUN_LOCK and recorded itself)."""
    if os.environ.get(INHERIT_ENV) != str(path):
        return False
    holder = read_holder(path)
    return bool(holder) and holder["pid"] in _ancestors()


def _busy_message(path: Path) -> str:
    import psutil

    holder = None
    for _ in range(20):  # the holder writes its name right after taking the lock
        holder = read_holder(path)
        if holder:
            break
        time.sleep(0.05)
    what = describe(holder)
    if holder and not psutil.pid_exists(holder["pid"]):
        what += ", which has exited, but a process it started still holds the lock"
    return (f"run folder {path.parent} is in use by {what}. Two stages writing one run folder would mix their "
            f"outputs: wait for it to finish (or stop it), or give this run another name (name=...). "
            f"Lock file: {path}.")


def _own_command() -> list[str]:
    """This process's command line as the user typed it: `python -m data_prep recipe.yaml ...`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return ["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return ["python", *sys.argv]


def _write_holder(fd: int, command: list[str] | None) -> None:
    import socket

    argv = command if command is not None else _own_command()
    holder = {"pid": os.getpid(), "command": shlex.join(argv), "started": time.time(), "host": socket.gethostname()}
    data = (json.dumps(holder) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
