"""Retention guard (`eval.retention`): does the fine-tune cost the base model its general ability?

Offline: the per-row answer-token loss of base and tuned on question/answer rows shipped in `eval/general_data/`,
rendered with the recipe's chat template; tuned - base gets a paired bootstrap interval (positive: a drop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.schema import Recipe

GENERAL_DIR = Path(__file__).resolve().parent / "general_data"  # package data, also in the wheel


def available() -> list[str]:
    return sorted(p.stem for p in GENERAL_DIR.glob("*.jsonl"))


def load_retention(recipe: Recipe, tokenizer: Any) -> dict[str, list[dict[str, Any]]]:
    """Each retention set rendered for the loss: {name: [{id, input_ids, assistant_masks}, ...]} (the first
    `eval.retention.max_rows` rows; a row cut by eval.retention.max_length keeps the answer tokens that fit, one
    with none left is skipped)."""
    from tailor.render import RowError, renderer_for

    settings = recipe.eval.retention
    if settings is None:
        return {}
    renderer = renderer_for(recipe, tokenizer)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in settings.sets:
        path = GENERAL_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise TailorError(f"eval.retention.sets: no general set {name!r} (shipped: {', '.join(available())}, in "
                              f"{GENERAL_DIR}).")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if settings.max_rows is not None and len(rows) >= settings.max_rows:
                break
            item = json.loads(line)
            messages = [{"role": "user", "content": item["question"]}, {"role": "assistant", "content": item["answer"]}]
            try:
                arrays = renderer.render_arrays(messages, settings.max_length)
            except RowError:  # no answer token within max_length
                continue
            rows.append({"id": f"{name}:{number}", "input_ids": arrays.input_ids.tolist(),
                         "assistant_masks": arrays.assistant_masks.tolist()})
        if not rows:
            raise TailorError(f"eval.retention: no row of {name} fits eval.retention.max_length={settings.max_length} "
                              f"with an answer token; raise it.")
        out[name] = rows
    return out


def summarize(recipe: Recipe, losses: dict[str, dict[str, list[float | None]]],
              seconds: dict[str, float]) -> dict[str, Any]:
    """Per retention set: mean per-row loss of base and tuned, the paired interval of tuned - base (a positive
    delta is a drop in retention), rows used; and the cost in seconds."""
    from eval.stats import paired_bootstrap

    sets: dict[str, Any] = {}
    for name, by_variant in losses.items():
        c = paired_bootstrap(by_variant["base"], by_variant["tuned"], f"{name} loss",
                             resamples=recipe.eval.bootstrap_resamples, confidence=recipe.eval.confidence,
                             seed=recipe.training.seed)
        sets[name] = {"base_loss": c.base_mean, "tuned_loss": c.tuned_mean, "delta": c.delta, "ci_low": c.ci_low,
                      "ci_high": c.ci_high, "rows": c.n, "excluded": c.excluded, "rows_higher_loss": c.better,
                      "rows_lower_loss": c.worse}
    return {"sets": sets, "seconds": round(sum(seconds.values()), 2), "seconds_by_variant": seconds,
            "max_length": recipe.eval.retention.max_length if recipe.eval.retention else None}
