"""The eval stage: base vs base + adapter on the held-out rows; writes results.json and predictions.jsonl."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from eval.metrics import all_metrics, json_field_scores
from tailor.errors import TailorError
from tailor.recipe import recipe_hash
from tailor.runs import RunPaths, atomic_write_json, atomic_write_text, read_json, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)


def load_heldout(recipe: Recipe, paths: RunPaths) -> list[dict[str, Any]]:
    from datasets import load_dataset

    from data_prep.prepare import check_prepared_data

    check_prepared_data(recipe, paths)
    rows = load_dataset("parquet", data_files=str(paths.heldout_data), split="train").to_list()
    if not rows:
        raise TailorError(f"{paths.heldout_data} has no rows: raise data.heldout_fraction or add data.")
    return rows[: recipe.eval.max_rows]


def score(predictions: list[str], rows: list[dict], recipe: Recipe) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Mean of each metric over the rows where it applies, plus per-row scores (None = not applicable)."""
    registry = all_metrics()
    options = {"fields": recipe.eval.json_fields, "pattern": recipe.eval.regex, "schema": recipe.eval.json_schema}
    per_row: list[dict[str, Any]] = [{} for _ in rows]
    summary: dict[str, Any] = {}
    for name in recipe.eval.metrics:
        values = []
        for i, (prediction, row) in enumerate(zip(predictions, rows)):
            value = registry[name](prediction, row["reference"], **options)
            per_row[i][name] = value
            if value is not None:
                values.append(value)
        summary[name] = sum(values) / len(values) if values else None
        if len(values) < len(rows):
            summary[f"{name}_excluded_rows"] = len(rows) - len(values)
    if "json_field_accuracy" in recipe.eval.metrics:
        fields: dict[str, list[float]] = {}
        for prediction, row in zip(predictions, rows):
            for key, value in (json_field_scores(prediction, row["reference"], recipe.eval.json_fields) or {}).items():
                fields.setdefault(key, []).append(value)
        summary["json_fields"] = {key: sum(v) / len(v) for key, v in fields.items()}
    if "classification" in recipe.eval.metrics:
        summary["classification_report"] = _classification(predictions, rows, recipe.eval.labels or [])
        summary["macro_f1"] = summary["classification_report"]["macro_f1"]
    return summary, per_row


def _classification(predictions: list[str], rows: list[dict], labels: list[str]) -> dict[str, Any]:
    from dataclasses import asdict

    from eval.text_metrics import classification_report

    try:
        return asdict(classification_report(predictions, [r["reference"] for r in rows], labels))
    except ValueError as err:
        raise TailorError(f"eval.labels: {err}. Every held-out reference must be one of the labels.") from None


def compare(per_row: dict[str, list[dict]], rows: list[dict], recipe: Recipe) -> tuple[dict, list[dict]]:
    """Paired bootstrap interval of tuned - base for every metric, and the rows that got worst."""
    from dataclasses import asdict

    from eval.stats import paired_bootstrap, worst_regressions

    comparisons = {}
    for name in recipe.eval.metrics:
        base = [r[name] for r in per_row["base"]]
        tuned = [r[name] for r in per_row["tuned"]]
        if all(v is None for v in base) or all(v is None for v in tuned):
            continue
        comparisons[name] = asdict(paired_bootstrap(base, tuned, name, resamples=recipe.eval.bootstrap_resamples,
                                                    confidence=recipe.eval.confidence, seed=recipe.training.seed))
    primary = recipe.eval.metrics[0]
    worst = [{"id": i, "metric": primary, "base": b, "tuned": t} for i, b, t in worst_regressions(
        [r["id"] for r in rows], [r[primary] for r in per_row["base"]], [r[primary] for r in per_row["tuned"]])]
    return comparisons, worst


def evaluate(recipe: Recipe, adapter: Path | None = None) -> dict[str, Any]:
    """Evaluate base and tuned model; return the results written to `eval/results.json`."""
    from peft import PeftModel

    from eval.generate import generate
    from eval.loss import assistant_loss
    from tailor.models import load_model, load_tokenizer

    paths = run_paths(recipe)
    adapter = adapter or paths.adapter_dir
    if not (adapter / "adapter_config.json").is_file():
        raise TailorError(f"{adapter} holds no adapter (adapter_config.json missing): run `make train` first, "
                          "or pass the folder of a saved adapter.")
    rows = load_heldout(recipe, paths)
    tokenizer = load_tokenizer(recipe.model, source=str(adapter))
    base = load_model(recipe.model, quantize_4bit=recipe.peft.method == "qlora")
    model = PeftModel.from_pretrained(base, str(adapter))
    chat = [row for row in rows if row["prompt"]]  # plain-text rows (continued pretraining) get loss only
    prompts = [row["prompt"] for row in chat]

    results: dict[str, Any] = {"rows": len(rows), "generation_rows": len(chat), "adapter": str(adapter),
                               "models": {}, "seconds": {}}
    outputs: dict[str, list[str]] = {}
    per_row: dict[str, list[dict]] = {}
    variants = (["base"] if recipe.eval.compare_base else []) + ["tuned"]
    for variant in variants:
        started = time.time()
        if variant == "base":
            with model.disable_adapter():
                outputs[variant] = generate(model, tokenizer, prompts, recipe.eval, desc="base")
                loss = assistant_loss(model, rows, tokenizer.pad_token_id)
        else:
            outputs[variant] = generate(model, tokenizer, prompts, recipe.eval, desc="tuned")
            loss = assistant_loss(model, rows, tokenizer.pad_token_id)
        summary, per_row[variant] = score(outputs[variant], chat, recipe)
        results["models"][variant] = {"loss": loss["loss"], "perplexity": loss["perplexity"], **summary}
        results["seconds"][variant] = round(time.time() - started, 1)

    if "base" in results["models"]:
        results["delta"] = {k: results["models"]["tuned"][k] - results["models"]["base"][k]
                            for k, v in results["models"]["tuned"].items()
                            if isinstance(v, float) and isinstance(results["models"]["base"].get(k), float)}
        results["comparisons"], results["worst_regressions"] = compare(per_row, chat, recipe)
    results["settings"] = recipe.eval.model_dump(mode="json")
    results["hashes"] = {"recipe": recipe_hash(recipe), "data": read_json(paths.manifest)["data_hash"]}

    predictions = []
    for i, row in enumerate(chat):
        item = {"id": row["id"], "prompt": row["prompt"], "reference": row["reference"]}
        for variant in variants:
            item[variant] = outputs[variant][i]
            item[f"{variant}_scores"] = per_row[variant][i]
        predictions.append(item)
    atomic_write_text(paths.predictions, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    atomic_write_json(paths.results, results)
    update_record(paths, "eval", {"results": str(paths.results), "models": results["models"],
                                  "delta": results.get("delta", {})})
    return results


def format_table(results: dict[str, Any]) -> str:
    """metric | base | tuned | delta | 95% interval of the delta (paired bootstrap) | rows better/worse."""
    models = results["models"]
    tuned, base = models["tuned"], models.get("base", {})
    comparisons = results.get("comparisons", {})
    lines = [f"{'metric':<24}{'base':>9}{'tuned':>9}{'delta':>9}   {'95% interval':<18}{'better/worse':>12}"]
    for key, value in tuned.items():
        if not isinstance(value, float):
            continue
        b = base.get(key)
        c = comparisons.get(key)
        interval = f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{'*' if c['excludes_zero'] else ''}" if c else ""
        counts = f"{c['better']}/{c['worse']}" if c else ""
        delta = value - b if isinstance(b, float) else None
        lines.append(f"{key:<24}{_fmt(b):>9}{_fmt(value):>9}{_fmt(delta, True):>9}   {interval:<18}{counts:>12}")
    for field, value in tuned.get("json_fields", {}).items():
        b = base.get("json_fields", {}).get(field)
        lines.append(f"{'  field ' + field:<24}{_fmt(b):>9}{_fmt(value):>9}"
                     f"{_fmt(value - b if b is not None else None, True):>9}")
    if comparisons:
        lines.append("* the interval excludes 0: the difference is unlikely to be noise "
                     f"(paired bootstrap over {results['rows']} rows)")
    return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
