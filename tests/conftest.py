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


TINY_TRAINING = {"max_steps": 2, "batch_size": 4, "max_length": 64, "logging_steps": 1}


def write_tiny_recipe(path: Path, model: Path | str, data: Path | str, name: str = "tiny", *,
                      output_dir: Path | None = None, model_keys: dict | None = None, data_keys: dict | None = None,
                      peft: dict | None = None, training: dict | None = None, eval: dict | None = None,
                      tail: str = "") -> Path:
    """The tiny recipe the tests run (the one place it is written out): `name`, the checkpoint `model`, the chat
    file `data` with a quarter held out, 2 optimizer steps of 4 rows x 64 tokens logged every step, tracking off,
    runs under output_dir (default: runs/ beside the recipe). model_keys, data_keys and training add to or replace
    keys of those sections, peft and eval add the section; `tail` is YAML text appended as written."""
    recipe: dict = {"name": name, "output_dir": str(output_dir or path.parent / "runs"),
                    "model": {"name_or_path": str(model), **(model_keys or {})},
                    "data": {"sources": [{"path": str(data)}], "heldout_fraction": 0.25, **(data_keys or {})}}
    if peft:
        recipe["peft"] = peft
    recipe["training"] = {**TINY_TRAINING, **(training or {})}
    if eval:
        recipe["eval"] = eval
    recipe["tracking"] = {"mode": "disabled"}
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False) + tail, encoding="utf-8")
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path, tiny_qwen25: Path):
    """Factory: a recipe on the tiny Qwen2.5 checkpoint and a small chat file; returns the recipe path.

    fp32 throughout, on every CPU: tests built on it pin losses and compare models to 1e-4 (precision auto is
    covered by test_precision.py and test_pipeline.py)."""

    def make(rows: int = 48, model: Path | None = None) -> Path:
        data = write_jsonl(tmp_path / "data" / "chat.jsonl", chat_rows(rows))
        return write_tiny_recipe(tmp_path / "recipe.yaml", model or tiny_qwen25, data,
                                 model_keys={"dtype": "float32"}, training={"mixed_precision": "fp32"},
                                 eval={"metrics": ["exact_match", "json_valid", "json_field_accuracy"],
                                       "max_new_tokens": 8, "batch_size": 8, "max_rows": 8})

    return make
