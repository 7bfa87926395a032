"""Secrets never reach a file: a real tiny pipeline runs with a fake WANDB_API_KEY and HF_TOKEN in its environment,
then every file under the run folders (W&B's binary .wandb logs included), W&B's own local folders and the
stages' output are searched for them."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from test_lineage import FAKE_HF_TOKEN, FAKE_WANDB_KEY, pipeline  # noqa: F401 - the shared pipeline fixture

STARTED = time.time()


def _needles() -> list[bytes]:
    out = []
    for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
        raw = secret.encode()
        out += [raw, base64.b64encode(raw), raw[8:30]]  # also a fragment, in case a log line truncates it
    return out


def _files(root: Path, since: float = 0.0) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= since]


def test_no_secret_in_any_file_or_log_line(pipeline) -> None:  # noqa: F811 - the imported fixture
    files = _files(pipeline["a"].root) + _files(pipeline["b"].root)
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "run.json" for p in files)
    home = Path.home()
    files += [p for folder in (".local/share/wandb", ".cache/wandb", ".config/wandb")
              for p in _files(home / folder, since=STARTED - 3600)]
    leaks = [(str(p), needle) for p in files for needle in _needles() if needle in p.read_bytes()]
    assert not leaks
    logs = pipeline["logs"].encode()
    assert not [n for n in _needles() if n in logs]
