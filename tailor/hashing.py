"""Content hashes of files, read in blocks so large inputs never sit in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def update_with_file(hasher: Any, path: Path) -> None:
    """Feed a file's bytes to a hashlib object, 1 MiB at a time."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    update_with_file(hasher, path)
    return hasher.hexdigest()
