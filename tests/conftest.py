"""Shared test fixtures: tiny real-architecture checkpoints, recipes written to tmp folders."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TAILOR_CACHE", str(REPO / ".cache"))
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_qwen25() -> Path:
    from tiny_models import ensure_tiny_model

    return ensure_tiny_model("qwen2.5")


@pytest.fixture(scope="session")
def tiny_qwen3() -> Path:
    from tiny_models import ensure_tiny_model

    return ensure_tiny_model("qwen3")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_rows(n: int, offset: int = 0) -> list[dict]:
    """Small synthetic chat rows: 'echo the number' style, enough to learn in a few steps."""
    return [{"messages": [{"role": "user", "content": f"Say the number {i} as JSON."},
                          {"role": "assistant", "content": json.dumps({"number": i})}]}
            for i in range(offset, offset + n)]


@pytest.fixture
def tiny_recipe(tmp_path: Path, tiny_qwen25: Path):
    """Factory: a recipe on the tiny Qwen2.5 checkpoint and a small chat file; returns the recipe path.

    fp32 throughout, on every CPU: tests built on it pin losses and compare models to 1e-4 (precision auto is
    covered by test_precision.py and test_pipeline.py)."""

    def make(rows: int = 48, model: Path | None = None) -> Path:
        data = write_jsonl(tmp_path / "data" / "chat.jsonl", chat_rows(rows))
        text = f"""
            name: tiny
            output_dir: {tmp_path / 'runs'}
            model:
              name_or_path: {model or tiny_qwen25}
              dtype: float32
            data:
              sources:
                - path: {data}
              heldout_fraction: 0.25
            training:
              max_steps: 2
              batch_size: 4
              max_length: 64
              logging_steps: 1
              mixed_precision: fp32
            eval:
              metrics: [exact_match, json_valid, json_field_accuracy]
              max_new_tokens: 8
              batch_size: 8
              max_rows: 8
            tracking:
              mode: disabled
        """
        return write(tmp_path / "recipe.yaml", text)

    return make
