"""Deterministic held-out split by content hash: a row's side depends only on its content and the seed,
so appending rows never moves existing rows between train and held-out, and exact duplicates share a side."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_key(messages: list[dict[str, str]] | dict[str, Any]) -> str:
    """Hex sha256 of the canonical JSON of a conversation (or a preference row's parts): the row's stable id."""
    canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def split_score(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from the row id and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

