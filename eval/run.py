"""The eval stage: tuned vs base (and any other run or predictions file) on the held-out rows.

Writes `eval/results.json` (metrics, paired intervals, cost, settings, hashes), `eval/predictions.jsonl` (per-row
outputs and scores of every variant) and `eval/report.md` + `eval/report.html`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from eval.scoring import check_applicable, compare, compare_pair, metric_names, score  # noqa: F401 (re-export)
from eval.thinking import split_thinking, thinking_summary
from eval.variants import Variant, check_adapter, check_model_folder, from_run, read_predictions
from tailor.errors import TailorError
from tailor.hashing import file_sha256
from tailor.recipe import recipe_hash
from tailor.runs import RunPaths, atomic_dir, read_json, run_paths, update_record
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


def plan_variants(recipe: Recipe, paths: RunPaths, chat: list[dict], adapter: Path | None = None,
                  model_dir: Path | None = None, compare_runs: list[str] = (),
                  prediction_files: list[str] = ()) -> list[Variant]:
    """Every variant, checked before any model loads. `prediction_files`: FILE or NAME=FILE."""
    if model_dir is not None:
        tuned = Variant("tuned", "model", str(check_model_folder(model_dir)))
    else:
        tuned = Variant("tuned", "adapter", str(check_adapter(adapter or paths.adapter_dir)))
    variants = ([Variant("base", "base", recipe.model.name_or_path)] if recipe.eval.compare_base else []) + [tuned]
    for folder in compare_runs:
        variants.append(from_run(Path(folder), chat, recipe))
    for spec in prediction_files:
        name, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        variants.append(read_predictions(Path(file), chat, name or Path(file).stem))
    names = [v.name for v in variants]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TailorError(f"two variants are named {duplicated[0]!r}; name a predictions file NAME=FILE "
                          f"(e.g. --predictions vendor={duplicated[0]}.jsonl).")
    return variants


def evaluate(recipe: Recipe, adapter: Path | None = None, model_dir: Path | None = None,
             compare_runs: list[str] = (), prediction_files: list[str] = ()) -> dict[str, Any]:
    """Evaluate every variant; return the results written to `eval/results.json`."""
    from eval.backends import resolve_backend
    from eval.cost import CostMeter
    from eval.engine import run_models
    from eval.general import check_available
    from tailor.models import load_tokenizer

    meter = CostMeter()
    paths = run_paths(recipe)
    rows = load_heldout(recipe, paths)
    chat = [row for row in rows if row["prompt"]]  # plain-text rows (continued pretraining) get loss only
    check_applicable(chat, recipe)
    check_available(recipe)
    backend = resolve_backend(recipe.eval)
    variants = plan_variants(recipe, paths, chat, adapter, model_dir, compare_runs, prediction_files)
    tuned = next(v for v in variants if v.name == "tuned")
    tokenizer = load_tokenizer(recipe.model, source=tuned.source)
    precision = _generation_precision(recipe, backend)
    engine = run_models(recipe, variants, chat, rows, tokenizer, backend)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    raw: dict[str, list[str | None]] = {}
    answers: dict[str, list[str | None]] = {}
    thinking: dict[str, list[str | None]] = {}
    per_row: dict[str, list[dict]] = {}
    results: dict[str, Any] = {"rows": len(rows), "generation_rows": len(chat), "adapter": None, "model": None,
                               "backend": engine.backend, "variants": {}, "models": {}, "seconds": {},
                               "precision": {**precision, "dtype": engine.dtype or precision.get("dtype")}}
    results["adapter" if tuned.kind == "adapter" else "model"] = tuned.source
    for variant in variants:
        gen = engine.generations.get(variant.name)
        raw[variant.name] = gen.texts if gen else list(variant.outputs or [])
        splits = [split_thinking(t, recipe.eval.think_tags) if t is not None else None for t in raw[variant.name]]
        answers[variant.name] = [s.answer if s else None for s in splits]
        thinking[variant.name] = [s.thinking if s else None for s in splits]
        summary, per_row[variant.name] = score(answers[variant.name], chat, recipe)
        loss = engine.losses.get(variant.name)
        metrics = {"loss": loss["loss"], "perplexity": loss["perplexity"]} if loss else {}
        metrics.update(summary)
        metrics.update(thinking_summary([s for s in splits if s], count_tokens))
        results["models"][variant.name] = metrics
        results["variants"][variant.name] = variant.describe()
        if gen:
            results["seconds"][variant.name] = round(gen.seconds, 1)

    others = [v.name for v in variants if v.name != "tuned"]
    results["pairs"], results["worst"] = {}, {}
    for name in others:
        results["pairs"][name], results["worst"][name] = compare_pair(per_row[name], per_row["tuned"], chat, recipe)
    if "base" in results["models"]:
        results["delta"] = {k: results["models"]["tuned"][k] - results["models"]["base"][k]
                            for k, v in results["models"]["tuned"].items()
                            if isinstance(v, float) and isinstance(results["models"]["base"].get(k), float)}
        results["comparisons"], results["worst_regressions"] = compare(per_row, chat, recipe)
    if recipe.eval.judge is not None:
        results["judge"] = _judge(recipe, chat, answers, others)
    if recipe.eval.general_tasks:
        results["general"] = _general(recipe, tuned)
    results["cost"] = meter.summary(engine.gpus, {n: {"tokens": sum(g.new_tokens), "seconds": g.seconds}
                                                  for n, g in engine.generations.items()})
    results["settings"] = recipe.eval.model_dump(mode="json")
    results["hashes"] = _hashes(recipe, paths, variants)
    results["metric_names"] = metric_names(recipe)

    _write(paths, recipe, results, chat, [v.name for v in variants], raw, answers, thinking, per_row)
    return results


def _generation_precision(recipe: Recipe, backend: str) -> dict[str, Any]:
    """The generation dtype and why (printed once, recorded in results.json and run.json)."""
    from tailor.models import resolve_dtype
    from tailor.precision import device_precision

    chosen = device_precision()
    dtype = str(resolve_dtype(recipe.model, for_generation=True)).removeprefix("torch.")
    reason = chosen.reason if recipe.model.dtype == "auto" else "model.dtype in the recipe"
    print(f"eval: generating in {dtype} on {chosen.device} ({reason})", flush=True)
    return {"dtype": dtype, "reason": reason, "device": chosen.device, "backend": backend}


def _judge(recipe: Recipe, chat: list[dict], answers: dict[str, list], others: list[str]) -> dict[str, Any]:
    from eval.judge import judge_pair

    settings = recipe.eval.judge
    assert settings is not None
    return {name: judge_pair(chat, answers[name], answers["tuned"], settings, recipe.eval.confidence,
                             recipe.eval.bootstrap_resamples, recipe.training.seed) for name in others}


def _general(recipe: Recipe, tuned: Variant) -> dict[str, Any]:
    from eval.general import run_general
    from tailor.models import model_source

    merged = tuned.source if tuned.kind == "model" else None
    return run_general(recipe, model_source(recipe.model), None if merged else tuned.source, merged)


def _hashes(recipe: Recipe, paths: RunPaths, variants: list[Variant]) -> dict[str, Any]:
    """Recipe, prepared data, and each variant's weights or predictions file (sha256)."""
    hashes: dict[str, Any] = {"recipe": recipe_hash(recipe), "data": read_json(paths.manifest)["data_hash"]}
    for variant in variants:
        source = Path(variant.source)
        files = {"adapter": [source / "adapter_model.safetensors"], "predictions": [source],
                 "model": sorted(source.glob("*.safetensors")) if source.is_dir() else []}.get(variant.kind, [])
        found = {f.name: file_sha256(f) for f in files if f.is_file()}
        if found:
            hashes[variant.name] = found
    return hashes


def _write(paths: RunPaths, recipe: Recipe, results: dict, chat: list[dict], names: list[str],
           raw: dict, answers: dict, thinking: dict, per_row: dict) -> None:
    from eval.report import write_reports

    predictions = []
    for i, row in enumerate(chat):
        item = {"id": row["id"], "prompt": row["prompt"], "reference": row["reference"]}
        for name in names:
            item[name] = raw[name][i]
            if thinking[name][i] is not None:
                item[f"{name}_thinking"], item[f"{name}_answer"] = thinking[name][i], answers[name][i]
            item[f"{name}_scores"] = per_row[name][i]
        predictions.append(item)
    with atomic_dir(paths.eval_dir) as tmp:  # predictions, results and reports appear together or not at all
        (tmp / paths.predictions.name).write_text(
            "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8")
        (tmp / paths.results.name).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        write_reports(tmp, recipe.name, results, predictions)
    update_record(paths, "eval", {"results": str(paths.results), "models": results["models"],
                                  "delta": results.get("delta", {}), "cost": results["cost"],
                                  "precision": results["precision"]})


def format_table(results: dict[str, Any]) -> str:
    """metric | base | tuned | delta | 95% interval of the delta (paired bootstrap) | rows better/worse, then one
    line per other variant compared with tuned."""
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
    for name, pair in results.get("pairs", {}).items():
        if name == "base":
            continue
        lines.append(f"tuned vs {name} ({_exclusions(results, name)}):")
        for metric, c in pair.items():
            interval = f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{'*' if c['excludes_zero'] else ''}"
            counts = f"{c['better']}/{c['worse']}"
            lines.append(f"  {metric:<22}{c['base_mean']:>9.3f}{c['tuned_mean']:>9.3f}{c['delta']:>+9.3f}   "
                         f"{interval:<18}{counts:>12}")
    if comparisons or results.get("pairs"):
        lines.append("* the interval excludes 0: the difference is unlikely to be noise "
                     f"(paired bootstrap over {results.get('generation_rows', results['rows'])} rows)")
    cost = results.get("cost")
    if cost:
        speed = ", ".join(f"{n} {g['tokens_per_second']} tok/s" for n, g in cost["generation"].items())
        lines.append(f"cost: {cost['wall_seconds']:.0f} s, {cost['gpu_hours']:.4f} GPU-h, {cost['cpu_hours']:.4f} "
                     f"CPU-h; {speed}")
    return "\n".join(lines)


def _exclusions(results: dict[str, Any], name: str) -> str:
    info = results.get("variants", {}).get(name, {})
    parts = [info.get("kind", "")]
    if info.get("missing_ids"):
        parts.append(f"{info['missing_ids']} rows without a prediction excluded")
    if info.get("extra_ids"):
        parts.append(f"{info['extra_ids']} extra ids ignored")
    return ", ".join(p for p in parts if p)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
