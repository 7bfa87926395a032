"""Trainer callbacks: checkpoint completion markers, preemption (SIGTERM/SIGUSR1) handling, per-rank heartbeats.

Preemption (a signal here, or `launch/STOP` written by `python -m train`): at the next step end all ranks agree via an
all-reduce, the trainer saves a checkpoint and stops, and the job exits 75. Heartbeats: each rank writes
`launch/heartbeat-rank<N>.json` at every step, so the launcher can name the rank that stalled a collective.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from train.checkpoints import mark_complete

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class CheckpointMarker(TrainerCallback):
    """Mark a checkpoint complete once the trainer has written all of it (rank 0 writes the marker)."""

    def __init__(self, info: Any) -> None:
        self.info = info  # callable(step) -> dict

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, self.info(state.global_step))
        _barrier()


class PreemptionStop(TrainerCallback):
    """Save a checkpoint and stop at the next step end after SIGTERM/SIGUSR1 or a STOP file."""

    def __init__(self, stop_file: Path, heartbeat: "Heartbeat | None" = None) -> None:
        self.stop_file = stop_file
        self.heartbeat = heartbeat
        self.signalled: int | None = None
        self.stopped_at: int | None = None
        self.previous: dict[int, Any] = {}

    def _on_signal(self, signum, frame) -> None:
        self.signalled = signum

    def on_train_begin(self, args, state, control, **kwargs):
        self.previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_step_end(self, args, state, control, **kwargs):
        local = self.signalled is not None or self.stop_file.exists()
        if self.heartbeat:  # "arrived at the step-end sync": whoever never arrives is the stalled rank
            self.heartbeat.beat(state.global_step, "sync")
        if _any_rank(local):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


class Heartbeat(TrainerCallback):
    """Write this rank's progress at each step's start and end (and honour the test-only stall injection)."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = folder / f"heartbeat-rank{rank}.json"
        self.rank = rank
        self.stall = _stall_request(rank)
        folder.mkdir(parents=True, exist_ok=True)

    def beat(self, step: int, phase: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"rank": self.rank, "step": step, "phase": phase, "time": time.time(),
                                   "host": socket.gethostname(), "pid": os.getpid()}))
        os.replace(tmp, self.path)

    def on_train_begin(self, args, state, control, **kwargs):
        self.beat(state.global_step, "done")

    def on_step_begin(self, args, state, control, **kwargs):
        self.beat(state.global_step + 1, "running")

    def on_step_end(self, args, state, control, **kwargs):
        self.beat(state.global_step, "done")
        if self.stall and state.global_step == self.stall[0]:
            time.sleep(self.stall[1])


def read_heartbeats(folder: Path) -> list[dict[str, Any]]:
    beats = []
    for path in sorted(folder.glob("heartbeat-rank*.json")):
        with contextlib.suppress(OSError, ValueError):
            beats.append(json.loads(path.read_text()))
    return beats


def stalled_ranks(beats: list[dict[str, Any]]) -> str | None:
    """A sentence naming the rank(s) a step behind or missing from the step-end sync the others wait in; else None."""
    if len(beats) < 2:
        return None
    order = {"done": 0, "sync": 1, "running": 2}

    def progress(beat: dict[str, Any]) -> tuple[int, int]:
        return beat["step"], order.get(beat.get("phase"), 0)

    latest = max(progress(b) for b in beats)
    behind = [b for b in beats if progress(b) < latest]
    if not behind:
        return None
    where = {"done": "finished step {step}", "sync": "waiting at the sync after step {step}",
             "running": "in step {step}"}
    names = ", ".join(f"rank {b['rank']} (host {b['host']}, pid {b['pid']}, "
                      f"{where.get(b.get('phase'), 'at step {step}').format(step=b['step'])}, last seen "
                      f"{time.time() - b['time']:.0f}s ago)" for b in behind)
    ahead = where[[k for k, v in order.items() if v == latest[1]][0]].format(step=latest[0])
    return f"stalled: {names}; the other ranks were {ahead}."


def _stall_request(rank: int) -> tuple[int, float] | None:
    """TAILOR_FAULT_STALL=rank:step:seconds makes one rank sleep after a step (fault-injection tests only)."""
    spec = os.environ.get("TAILOR_FAULT_STALL")
    if not spec:
        return None
    r, step, seconds = spec.split(":")
    return (int(step), float(seconds)) if int(r) == rank else None


def _any_rank(flag: bool) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
