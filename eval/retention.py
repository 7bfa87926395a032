"""Retention guard (`eval.retention`): does the fine-tune cost the base model its general ability?

Offline and cheap: the loss of base and tuned on general text shipped in the package
(`eval/general_data/<name>.jsonl`, question/answer rows, e.g. the GSM8K slice), rendered with the recipe's chat
template like any held-out row (the question as the user turn, the answer as the assistant turn). Per row the mean
NLL of its answer tokens; the difference tuned - base gets a paired bootstrap interval (`eval.stats`). A positive
difference is a loss increase, i.e. a drop in retention.
"""

from __future__ import annotations

import json
from dataclasses import asdict
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
    skipped: dict[str, int] = {}
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
                skipped[name] = skipped.get(name, 0) + 1
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
        comparison = asdict(paired_bootstrap(by_variant["base"], by_variant["tuned"], f"{name} loss",
                                             resamples=recipe.eval.bootstrap_resamples,
                                             confidence=recipe.eval.confidence, seed=recipe.training.seed))
        sets[name] = {"base_loss": comparison["base_mean"], "tuned_loss": comparison["tuned_mean"],
                      "delta": comparison["delta"], "ci_low": comparison["ci_low"], "ci_high": comparison["ci_high"],
                      "rows": comparison["n"], "excluded": comparison["excluded"],
                      "rows_higher_loss": comparison["better"], "rows_lower_loss": comparison["worse"]}
    return {"sets": sets, "seconds": round(sum(seconds.values()), 2), "seconds_by_variant": seconds,
            "max_length": recipe.eval.retention.max_length if recipe.eval.retention else None}
