"""Per-row task metrics of one variant, and paired comparisons of tuned against every other variant."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from eval.classification import classification_report
from tailor.errors import TailorError
from tailor.metrics import all_metrics, json_field_scores, load_metric, metric_name, metric_options
from tailor.schema import Recipe

WHY_NOT_APPLICABLE = {"json_field_accuracy": "the references are not JSON objects",
                      "classification": "no reference is one of eval.labels"}


def metric_functions(recipe: Recipe) -> dict[str, Callable[..., float | None]]:
    """Every metric the recipe asks for, built-in first, then its custom ones (by function name)."""
    registry = all_metrics()
    functions = {name: registry[name] for name in recipe.eval.metrics}
    for spec in recipe.eval.custom_metrics:
        name = metric_name(spec)
        if name in functions:
            raise TailorError(f"eval.custom_metrics: {spec!r} is named {name!r} like another metric; rename the "
                              "function.")
        functions[name] = load_metric(spec)
    return functions


def metric_names(recipe: Recipe) -> list[str]:
    return [*recipe.eval.metrics, *(metric_name(s) for s in recipe.eval.custom_metrics)]


def check_applicable(rows: list[dict], recipe: Recipe) -> None:
    """Fail before any generation when a metric applies to none of the rows (e.g. json_field_accuracy on plain-text
    references): such a metric would report nothing, or worse, a number over no rows."""
    if not rows:
        return
    options = metric_options(recipe)
    for name, function in metric_functions(recipe).items():
        if name == "classification":
            _classification([row["reference"] for row in rows], rows, recipe.eval.labels or [])
            continue  # raises for a reference outside the label set (naming the row)
        if all(function(row["reference"], row["reference"], **options) is None for row in rows):
            why = WHY_NOT_APPLICABLE.get(name, "it returned None for every row")
            raise TailorError(f"eval.metrics: {name} applies to none of the {len(rows)} held-out rows ({why}); "
                              f"remove it from the recipe or fix the data.")


def score(predictions: list[str | None], rows: list[dict],
          recipe: Recipe) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Mean of each metric over the rows where it applies, plus per-row scores (None = not applicable, or no
    prediction for that row: counted in `missing_rows`)."""
    options = metric_options(recipe)
    per_row: list[dict[str, Any]] = [{} for _ in rows]
    summary: dict[str, Any] = {}
    present = [i for i, p in enumerate(predictions) if p is not None]
    if len(present) < len(rows):
        summary["missing_rows"] = len(rows) - len(present)
    for name, function in metric_functions(recipe).items():
        for i, (prediction, row) in enumerate(zip(predictions, rows)):
            per_row[i][name] = None if prediction is None else function(prediction, row["reference"], **options)
        values = [value for scores in per_row if (value := scores.get(name)) is not None]
        summary[name] = sum(values) / len(values) if values else None
        if len(values) < len(present):
            summary[f"{name}_excluded_rows"] = len(present) - len(values)
    kept = [(predictions[i], rows[i]) for i in present]
    if "json_field_accuracy" in recipe.eval.metrics:
        fields: dict[str, list[float]] = {}
        for prediction, row in kept:
            for key, value in (json_field_scores(prediction, row["reference"], recipe.eval.json_fields) or {}).items():
                fields.setdefault(key, []).append(value)
        summary["json_fields"] = {key: sum(v) / len(v) for key, v in fields.items()}
    if "classification" in recipe.eval.metrics and kept:
        report = _classification([p for p, _ in kept], [r for _, r in kept], recipe.eval.labels or [])
        summary["classification_report"] = report
        summary["macro_f1"] = report["macro_f1"]
        summary["outside_label_set"] = report["outside_label_set"]
    return summary, per_row


def _classification(predictions: list[str], rows: list[dict], labels: list[str]) -> dict[str, Any]:
    try:
        return asdict(classification_report(predictions, [r["reference"] for r in rows], labels))
    except ValueError as err:
        raise TailorError(f"eval.labels: {err}. Every held-out reference must be one of the labels.") from None


def compare_pair(other: list[dict], tuned: list[dict], rows: list[dict], recipe: Recipe,
                 metrics: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Paired bootstrap interval of tuned - other for every metric, and the rows where tuned lost most."""
    from eval.stats import paired_bootstrap, worst_regressions

    metrics = metrics or metric_names(recipe)
    comparisons = {}
    for name in metrics:
        a = [r.get(name) for r in other]
        b = [r.get(name) for r in tuned]
        if not any(x is not None and y is not None for x, y in zip(a, b)):
            continue
        comparisons[name] = asdict(paired_bootstrap(a, b, name, resamples=recipe.eval.bootstrap_resamples,
                                                    confidence=recipe.eval.confidence, seed=recipe.training.seed))
    primary = metrics[0]
    worst = [{"id": i, "metric": primary, "other": o, "tuned": t} for i, o, t in worst_regressions(
        [r["id"] for r in rows], [r.get(primary) for r in other], [r.get(primary) for r in tuned])]
    return comparisons, worst


def compare(per_row: dict[str, list[dict]], rows: list[dict], recipe: Recipe) -> tuple[dict, list[dict]]:
    """Tuned vs base (the headline comparison); worst regressions name the base score `base`."""
    comparisons, worst = compare_pair(per_row["base"], per_row["tuned"], rows, recipe)
    return comparisons, [{"id": w["id"], "metric": w["metric"], "base": w["other"], "tuned": w["tuned"]}
                         for w in worst]
