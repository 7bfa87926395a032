"""The eval stage: tuned vs base (and any other run or predictions file) on the held-out rows.

Writes `eval/results.json` (metrics, paired intervals, cost, settings, hashes), `eval/predictions.jsonl` (per-row
outputs and scores of every variant) and `eval/report.md` + `eval/report.html`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.scoring import check_applicable, compare, compare_pair, metric_names, score  # noqa: F401 (re-export)
from eval.variants import Variant, check_adapter, check_model_folder, from_run, read_predictions
from tailor.errors import TailorError
from tailor.hashing import file_sha256
from tailor.recipe import recipe_hash
from tailor.runs import RunPaths, atomic_dir, read_json, run_paths, update_record
from tailor.schema import Recipe
from tailor.thinking import split_thinking, thinking_summary


def plan_variants(recipe: Recipe, paths: RunPaths, chat: list[dict], adapter: Path | None = None,
                  model_dir: Path | None = None, compare_runs: list[str] = (),
                  prediction_files: list[str] = ()) -> list[Variant]:
    """Every variant, checked before any model loads. `prediction_files`: FILE or NAME=FILE."""
    tuned = (Variant("tuned", "model", str(check_model_folder(model_dir))) if model_dir is not None
             else Variant("tuned", "adapter", str(check_adapter(adapter or paths.adapter_dir))))
    variants = ([Variant("base", "base", recipe.model.name_or_path)] if recipe.eval.compare_base else []) + [tuned]
    variants += [from_run(Path(folder), chat, recipe) for folder in compare_runs]
    for spec in prediction_files:
        name, _, file = spec.rpartition("=")  # ("", "", spec) without a NAME=
        variants.append(read_predictions(Path(file), chat, name or Path(file).stem))
    names = [v.name for v in variants]
    if duplicated := sorted({n for n in names if names.count(n) > 1}):
        raise TailorError(f"two variants are named {duplicated[0]!r}; name a predictions file NAME=FILE "
                          f"(e.g. --predictions vendor={duplicated[0]}.jsonl).")
    return variants


def evaluate(recipe: Recipe, adapter: Path | None = None, model_dir: Path | None = None,
             compare_runs: list[str] = (), prediction_files: list[str] = ()) -> dict[str, Any]:
    """Evaluate every variant on every selected eval set; return the results written to `eval/results.json`. The
    first (default) set gets other runs, predictions files and the judge, and also fills the top-level keys."""
    from eval.backends import resolve_backend
    from eval.cost import CostMeter
    from eval.engine import SetInput, run_sets
    from eval.gate import gate_set, verdict
    from eval.general import check_available, run_general
    from eval.judge import judge_pair
    from eval.retention import load_retention, summarize
    from eval.sets import load_set, selected_sets
    from tailor.contract import check_prepared_data
    from tailor.models import load_tokenizer, model_source

    meter = CostMeter()
    paths = run_paths(recipe)
    check_prepared_data(recipe, paths)
    names = selected_sets(recipe)
    gate = recipe.eval.gate
    gated = gate_set(gate, recipe.data.set_names()) if gate else None
    if gate and gated not in names:
        raise TailorError(f"eval.gate reads set {gated!r}, which this run does not evaluate (sets: "
                          f"{', '.join(names)}); add it to EVAL_SETS / eval.sets.")
    if gate and gate.metric not in metric_names(recipe):
        raise TailorError(f"eval.gate.metric {gate.metric!r} is not one of eval.metrics or eval.custom_metrics "
                          f"({', '.join(metric_names(recipe))}).")
    rows = {name: load_set(recipe, paths, name) for name in names}
    chats = {name: [row for row in rows[name] if row["prompt"]] for name in names}  # text rows: loss only
    for name in names:
        check_applicable(chats[name], recipe)
    check_available(recipe)
    backend = resolve_backend(recipe.eval)
    primary = names[0]
    variants = plan_variants(recipe, paths, chats[primary], adapter, model_dir, compare_runs, prediction_files)
    tuned = next(v for v in variants if v.name == "tuned")
    tokenizer = load_tokenizer(recipe.model, source=tuned.source)
    precision = _generation_precision(recipe, backend)
    plain = {v.name for v in variants if v.name in ("base", "tuned")}
    inputs = {name: SetInput(chats[name], rows[name], {v.name for v in variants} if name == primary else plain)
              for name in names}
    retention_rows = load_retention(recipe, tokenizer)
    engine = run_sets(recipe, variants, inputs, tokenizer, backend, retention_rows)
    count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    blocks, outputs = {}, {}
    for name in names:
        blocks[name], outputs[name] = _score_set(recipe, [v for v in variants if v.name in inputs[name].variants],
                                                 chats[name], rows[name], engine.sets[name], count_tokens)
    head = engine.sets[primary]
    results: dict[str, Any] = {"set": primary, "rows": len(rows[primary]), "generation_rows": len(chats[primary]),
                               "adapter": None, "model": None, "backend": head.backend,
                               "variants": {v.name: v.describe() for v in variants}, "models": {}, "seconds": {},
                               "precision": {**precision, "dtype": head.dtype or precision.get("dtype")},
                               **blocks[primary], "sets": blocks}
    results["adapter" if tuned.kind == "adapter" else "model"] = tuned.source
    if recipe.eval.judge is not None:
        answers = outputs[primary]["answers"]
        results["judge"] = {name: judge_pair(chats[primary], answers[name], answers["tuned"], recipe.eval.judge,
                                             recipe.eval.confidence, recipe.eval.bootstrap_resamples,
                                             recipe.training.seed) for name in answers if name != "tuned"}
    if recipe.eval.general_tasks:
        merged = tuned.source if tuned.kind == "model" else None
        results["general"] = run_general(recipe, model_source(recipe.model), None if merged else tuned.source, merged)
    if retention_rows:
        results["retention"] = summarize(recipe, engine.retention, engine.retention_seconds)
    if gate:
        results["gate"] = verdict(results, gate, gated)
    generations = {f"{n}" if name == primary else f"{n}@{name}": g for name in names
                   for n, g in engine.sets[name].generations.items()}
    results["cost"] = meter.summary(max(o.gpus for o in engine.sets.values()),
                                    {n: {"tokens": sum(g.new_tokens), "seconds": g.seconds}
                                     for n, g in generations.items()})
    results.update(settings=recipe.eval.model_dump(mode="json"), hashes=_hashes(recipe, paths, variants),
                   metric_names=metric_names(recipe))
    _write(paths, recipe, results, chats, outputs)
    return results


def _score_set(recipe: Recipe, variants: list[Variant], chat: list[dict], rows: list[dict], engine: Any,
               count_tokens: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One set's block of results.json and its per-row outputs (raw, answers, thinking, scores)."""
    out: dict[str, Any] = {"names": [v.name for v in variants], "raw": {}, "answers": {}, "thinking": {}, "per_row": {}}
    block: dict[str, Any] = {"rows": len(rows), "generation_rows": len(chat), "models": {}, "seconds": {}}
    per_row, models = out["per_row"], block["models"]
    for variant in variants:
        gen = engine.generations.get(variant.name)
        raw = out["raw"][variant.name] = gen.texts if gen else list(variant.outputs or [])
        splits = [split_thinking(t, recipe.eval.think_tags) if t is not None else None for t in raw]
        answers = out["answers"][variant.name] = [s.answer if s else None for s in splits]
        out["thinking"][variant.name] = [s.thinking if s else None for s in splits]
        summary, per_row[variant.name] = score(answers, chat, recipe)
        loss = engine.losses.get(variant.name)
        models[variant.name] = {**({"loss": loss["loss"], "perplexity": loss["perplexity"]} if loss else {}),
                                **summary, **thinking_summary([s for s in splits if s], count_tokens)}
        if gen:
            block["seconds"][variant.name] = round(gen.seconds, 1)
    block["pairs"], block["worst"] = {}, {}
    for name in (v.name for v in variants if v.name != "tuned"):
        block["pairs"][name], block["worst"][name] = compare_pair(per_row[name], per_row["tuned"], chat, recipe)
    if "base" in models:
        block["delta"] = {k: v - models["base"][k] for k, v in models["tuned"].items()
                          if isinstance(v, float) and isinstance(models["base"].get(k), float)}
        block["comparisons"], block["worst_regressions"] = compare(per_row, chat, recipe)
    return block, out


def _generation_precision(recipe: Recipe, backend: str) -> dict[str, Any]:
    """The generation dtype and why (printed once, recorded in results.json and run.json)."""
    from tailor.models import resolve_dtype
    from tailor.precision import device_precision

    chosen = device_precision()
    dtype = str(resolve_dtype(recipe.model, for_generation=True)).removeprefix("torch.")
    reason = chosen.reason if recipe.model.dtype == "auto" else "model.dtype in the recipe"
    print(f"eval: generating in {dtype} on {chosen.device} ({reason})", flush=True)
    return {"dtype": dtype, "reason": reason, "device": chosen.device, "backend": backend}


def _hashes(recipe: Recipe, paths: RunPaths, variants: list[Variant]) -> dict[str, Any]:
    """Recipe, prepared data, and each variant's weights or predictions file (sha256)."""
    hashes: dict[str, Any] = {"recipe": recipe_hash(recipe), "data": read_json(paths.manifest)["data_hash"]}
    for variant in variants:
        source = Path(variant.source)
        files = {"adapter": [source / "adapter_model.safetensors"], "predictions": [source],
                 "model": sorted(source.glob("*.safetensors")) if source.is_dir() else []}.get(variant.kind, [])
        if found := {f.name: file_sha256(f) for f in files if f.is_file()}:
            hashes[variant.name] = found
    return hashes


def _predictions(chat: list[dict], out: dict[str, Any]) -> list[dict]:
    """The rows of a predictions.jsonl: id, prompt, reference, then each variant's output and scores."""
    predictions = []
    for i, row in enumerate(chat):
        item = {"id": row["id"], "prompt": row["prompt"], "reference": row["reference"]}
        for name in out["names"]:
            item[name] = out["raw"][name][i]
            if out["thinking"][name][i] is not None:
                item[f"{name}_thinking"], item[f"{name}_answer"] = out["thinking"][name][i], out["answers"][name][i]
            item[f"{name}_scores"] = out["per_row"][name][i]
        predictions.append(item)
    return predictions


def _write(paths: RunPaths, recipe: Recipe, results: dict, chats: dict[str, list[dict]],
           outputs: dict[str, dict[str, Any]]) -> None:
    """predictions.jsonl (default set and sets/<name>/), results.json, the reports, and the eval stage in run.json."""
    from eval.report import write_reports

    def write_jsonl(path: Path, items: list[dict]) -> None:
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in items), encoding="utf-8")

    primary = results["set"]
    predictions = _predictions(chats[primary], outputs[primary])
    with atomic_dir(paths.eval_dir) as tmp:  # predictions, results and reports appear together or not at all
        write_jsonl(tmp / paths.predictions.name, predictions)
        for name, chat in chats.items():
            (tmp / "sets" / name).mkdir(parents=True)
            write_jsonl(tmp / "sets" / name / paths.predictions.name, _predictions(chat, outputs[name]))
        (tmp / paths.results.name).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        write_reports(tmp, recipe.name, results, predictions)
    gate = {k: results["gate"][k] for k in ("decision", "promote", "reason", "set")} if results.get("gate") else None
    sets = {name: {"rows": block["rows"], "delta": block.get("delta", {}),
                   "intervals": {m: [c["ci_low"], c["ci_high"]] for m, c in block.get("comparisons", {}).items()}}
            for name, block in results["sets"].items()}
    update_record(paths, "eval", {"results": str(paths.results), "models": results["models"],
                                  "delta": results.get("delta", {}), "cost": results["cost"],
                                  "precision": results["precision"], "sets": sets,
                                  "retention": results.get("retention"), "gate": gate})


def format_table(results: dict[str, Any]) -> str:
    """metric | base | tuned | delta | interval of the delta | better/worse, then tuned vs each other variant."""
    tuned, base = results["models"]["tuned"], results["models"].get("base", {})
    comparisons = results.get("comparisons", {})
    lines = [f"{'metric':<24}{'base':>9}{'tuned':>9}{'delta':>9}   {'95% interval':<18}{'better/worse':>12}"]
    for key, value in ((k, v) for k, v in tuned.items() if isinstance(v, float)):
        b = base.get(key)
        delta = value - b if isinstance(b, float) else None
        lines.append(f"{key:<24}{_fmt(b):>9}{_fmt(value):>9}{_fmt(delta, True):>9}   {_interval(comparisons.get(key))}")
    for field, value in tuned.get("json_fields", {}).items():
        b = base.get("json_fields", {}).get(field)
        lines.append(f"{'  field ' + field:<24}{_fmt(b):>9}{_fmt(value):>9}"
                     f"{_fmt(value - b if b is not None else None, True):>9}")
    for name, pair in ((n, p) for n, p in results.get("pairs", {}).items() if n != "base"):
        lines.append(f"tuned vs {name} ({_exclusions(results, name)}):")
        lines += [f"  {metric:<22}{c['base_mean']:>9.3f}{c['tuned_mean']:>9.3f}{c['delta']:>+9.3f}   {_interval(c)}"
                  for metric, c in pair.items()]
    if comparisons or results.get("pairs"):
        lines.append("* the interval excludes 0: the difference is unlikely to be noise "
                     f"(paired bootstrap over {results.get('generation_rows', results['rows'])} rows)")
    if cost := results.get("cost"):
        speed = ", ".join(f"{n} {g['tokens_per_second']} tok/s" for n, g in cost["generation"].items())
        lines.append(f"cost: {cost['wall_seconds']:.0f} s, {cost['gpu_hours']:.4f} GPU-h, {cost['cpu_hours']:.4f} "
                     f"CPU-h; {speed}")
    return "\n".join(lines)


def format_sets(results: dict[str, Any]) -> str:
    """The other eval sets' tables (base vs tuned), the retention guard and the gate verdict, for the terminal."""
    lines = []
    for name, block in ((n, b) for n, b in results.get("sets", {}).items() if n != results.get("set")):
        lines += [f"eval set {name} ({block['rows']} rows):", format_table({**block, "cost": None, "pairs": {}})]
    if retention := results.get("retention"):
        lines.append(f"retention (loss on general text, tuned - base; {retention['seconds']:.1f} s):")
        for name, r in retention["sets"].items():
            lines.append(f"  {name:<22}{r['base_loss']:>9.3f}{r['tuned_loss']:>9.3f}{r['delta']:>+9.3f}   "
                         f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]   {r['rows']} rows")
    if gate := results.get("gate"):
        lines.append(f"gate: {gate['decision']}: {gate['reason']}")
    return "\n".join(lines)


def _exclusions(results: dict[str, Any], name: str) -> str:
    info = results.get("variants", {}).get(name, {})
    parts = [info.get("kind", "")]
    if info.get("missing_ids"):
        parts.append(f"{info['missing_ids']} rows without a prediction excluded")
    if info.get("extra_ids"):
        parts.append(f"{info['extra_ids']} extra ids ignored")
    return ", ".join(p for p in parts if p)


def _interval(c: dict | None) -> str:
    """The interval (`*` when it excludes 0) and better/worse columns of a table row; blank without a comparison."""
    if not c:
        return f"{'':<18}{'':>12}"
    interval = f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{'*' if c['excludes_zero'] else ''}"
    counts = f"{c['better']}/{c['worse']}"
    return f"{interval:<18}{counts:>12}"


def _fmt(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else format(value, "+.3f" if signed else ".3f")
