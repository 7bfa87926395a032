"""report.md and report.html of the eval stage: tailor/templates/eval_report.{md,html} filled from one context
(metrics, paired intervals, exclusions, plots, per-set and classification tables, samples, regressions, cost).

`include_text=False` (W&B without tracking.log_samples) leaves out every prompt, reference and output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from markupsafe import Markup

from eval.stats import wilson_interval
from tailor.report import Table, bars, deltas, fmt, histogram, proportions, render
from tailor.runs import atomic_write_text

TABLES = (("Cost", "cost"), ("Settings", "settings"), ("Hashes", "hashes"))
SAMPLE_ROWS = 8


def render_markdown(name: str, results: dict[str, Any], predictions: list[dict], include_text: bool = True) -> str:
    return render("eval_report.md", **_context(name, results, predictions, include_text))


def render_html(name: str, results: dict[str, Any], predictions: list[dict], include_text: bool = True) -> str:
    return render("eval_report.html", plots=_plots(results, predictions), written=time.strftime("%Y-%m-%d %H:%M"),
                  **_context(name, results, predictions, include_text))


def write_reports(folder: Path, name: str, results: dict[str, Any], predictions: list[dict]) -> tuple[Path, Path]:
    """Write report.md and report.html (atomically) next to results.json."""
    md, html = folder / "report.md", folder / "report.html"
    atomic_write_text(md, render_markdown(name, results, predictions))
    atomic_write_text(html, render_html(name, results, predictions))
    return md, html


def _context(name: str, results: dict[str, Any], predictions: list[dict], include_text: bool) -> dict[str, Any]:
    """Everything both templates show, as text and `Table`s."""
    variants, by_id = _variants(results), {p["id"]: p for p in predictions}
    set_title = f" (eval set {results['set']})" if len(results.get("sets", {})) > 1 else ""
    return {"name": name, "results": results, "variants": variants, "gate": results.get("gate"),
            "confidence": f"{results['settings']['confidence']:.0%}", "metrics": _metrics(results, variants, set_title),
            "pairs": _pairs(results), "notes": _exclusions(results),
            "extras": _classification(results, variants, set_title) + _extra_tables(results),
            "include_text": include_text, "samples": sample_rows(predictions) if include_text else [],
            "total": len(predictions), "scores": lambda s: ", ".join(f"{k} {fmt(v)}" for k, v in (s or {}).items()),
            "worst": [(o, w, by_id.get(w["id"], {})) for o, items in results.get("worst", {}).items() for w in items],
            "tables": [Table(["key", "value"], flatten(results.get(key, {})), key, title) for title, key in TABLES]}


def _ci(c: dict | None, signed: bool = True, star: bool = True) -> str:
    """`[low, high]`, with `*` when the interval excludes 0 (and `star`); empty without an interval."""
    if not c:
        return ""
    mark = "*" if star and c.get("excludes_zero") else ""
    return f"[{fmt(c.get('ci_low'), signed)}, {fmt(c.get('ci_high'), signed)}]{mark}"


def _pairs(results: dict[str, Any]) -> Table:
    pairs = _pair_rows(results)
    rows = [[o, m, fmt(c["base_mean"]), fmt(c["tuned_mean"]), fmt(c["delta"], True), _ci(c), c["better"], c["worse"],
             c["same"], c["n"], c["excluded"]] for o, m, c in pairs]
    return Table(["vs", "metric", "other", "tuned", "delta", "interval", "better", "worse", "same", "n", "excluded"],
                 rows, "pairs", "Tuned minus each other variant", row_classes=[_sig(c) for _, _, c in pairs])


def _sig(c: dict | None) -> str:
    return ("up" if c["delta"] > 0 else "down") if c and c.get("excludes_zero") else ""


def _variants(results: dict[str, Any]) -> list[str]:
    names = list(results["models"])
    return ["tuned"] + [n for n in names if n != "tuned"] if "tuned" in names else names


def _pair_rows(results: dict[str, Any]) -> list[tuple[str, str, dict]]:
    return [(other, metric, c) for other, pair in results.get("pairs", {}).items() for metric, c in pair.items()]


def _metrics(results: dict[str, Any], variants: list[str], set_title: str) -> Table:
    """Scalar metrics of every variant and tuned − base with its interval and better/worse counts."""
    keys = list(dict.fromkeys(k for m in results["models"].values() for k, v in m.items()
                              if isinstance(v, float) and not k.endswith("_excluded_rows")))
    comparisons, rows = results.get("comparisons", {}), []
    for key in keys:
        c = comparisons.get(key)
        rows.append([key, *(fmt(results["models"][v].get(key)) for v in variants),
                     fmt(c["delta"] if c else results.get("delta", {}).get(key), True), _ci(c),
                     f"{c['better']}/{c['worse']}" if c else ""])
    return Table(["metric", *variants, "tuned − base", "interval", "better/worse"], rows, "metrics",
                 "Metrics" + set_title, row_classes=[_sig(comparisons.get(k)) for k in keys])


def _exclusions(results: dict[str, Any]) -> list[str]:
    """Every row left out of a number, said in words."""
    notes = []
    for name, info in results.get("variants", {}).items():
        if info.get("missing_ids"):
            notes.append(f"{name}: {info['missing_ids']} held-out rows have no prediction (e.g. "
                         f"{', '.join(info.get('missing_examples', []))}); excluded from its scores and intervals.")
        if info.get("extra_ids"):
            notes.append(f"{name}: {info['extra_ids']} ids in the predictions file are not held-out rows; ignored.")
        if info.get("predictions_not_reused"):
            notes.append(f"{name}: its adapter was run on these rows (its predictions were not reused: "
                         f"{info['predictions_not_reused']}).")
    for name, metrics in results["models"].items():
        notes += [f"{name}: {key.removesuffix('_excluded_rows')} does not apply to {value} rows (excluded from its "
                  "mean)." for key, value in metrics.items() if key.endswith("_excluded_rows")]
        if metrics.get("outside_label_set"):
            notes.append(f"{name}: {metrics['outside_label_set']} answers are outside the label set (counted wrong).")
        if metrics.get("think_unfinished"):
            notes.append(f"{name}: {metrics['think_unfinished']} answers never closed their think block (empty "
                         "answer, scored as given).")
    return notes + [f"tuned vs {other}, {metric}: {c['excluded']} rows without both scores excluded (n={c['n']})."
                    for other, metric, c in _pair_rows(results) if c.get("excluded")]


def _classification(results: dict[str, Any], variants: list[str], set_title: str) -> list[Table]:
    """Per-label F1 of every variant and the most confused (reference -> answer) pairs of the default set."""
    reports = {v: results["models"][v]["classification_report"] for v in variants
               if isinstance(results["models"][v].get("classification_report"), dict)}
    if not reports:
        return []
    labels = next(iter(reports.values()))["per_label"]
    f1 = [[label, f"{labels[label]['support']:.0f}", *(fmt(r["per_label"][label]["f1"]) for r in reports.values())]
          for label in labels]
    confused = [[v, *pair] for v, r in reports.items() for pair in sorted(
        ((ref, pred, n) for ref, row in r["confusion"].items() for pred, n in row.items() if pred != ref and n > 0),
        key=lambda p: -p[2])[:5]]
    return [Table(["label", "rows", *(f"{v} F1" for v in reports)], f1, title="Classification per label" + set_title),
            Table(["model", "reference", "answer", "rows"], confused,
                  note="Most confused labels (reference -> answer, rows):")]


def _extra_tables(results: dict[str, Any]) -> list[Table]:
    """A table per eval set (base vs tuned with paired intervals), the retention guard, the judge, general ability."""
    tables, sets = [], results.get("sets", {})
    for name, block in sets.items() if len(sets) > 1 else ():
        base, comparisons, rows = block["models"].get("base", {}), block.get("comparisons", {}), []
        for key, value in block["models"].get("tuned", {}).items():
            if isinstance(value, float) and not key.endswith("_excluded_rows"):
                c = comparisons.get(key) or {}
                rows.append([key, fmt(base.get(key)), fmt(value), fmt(block.get("delta", {}).get(key), True), _ci(c),
                             c.get("better", ""), c.get("worse", "")])
        tables.append(Table(["metric", "base", "tuned", "delta", "interval", "better", "worse"], rows,
                            title=f"Eval set {name}",
                            note=f"{block['rows']} rows ({block['generation_rows']} generated)"
                            + (" — the default set, detailed above" if name == results.get("set") else "")))
    if retention := results.get("retention"):
        tables.append(Table(["set", "base loss", "tuned loss", "delta", "interval", "rows", "rows with higher loss"], [
            [name, fmt(r["base_loss"]), fmt(r["tuned_loss"]), fmt(r["delta"], True), _ci(r, star=False),
             r["rows"], r["rows_higher_loss"]] for name, r in retention["sets"].items()],
            title="Retention (loss on general text)", note="Mean per-row loss of the answer tokens, base vs tuned; a "
            f"positive delta is a loss increase (lost general ability). Cost: {retention['seconds']:.1f} s."))
    if results.get("judge"):
        tables.append(Table(["vs", "win rate", "interval", "wins", "losses", "ties", "position flips", "invalid"], [
            [other, fmt(j.get("win_rate")), _ci(j, False, False), j["wins"], j["losses"], j["ties"],
             j["position_flips"], j["invalid_replies"]] for other, j in results["judge"].items()],
            title="LLM judge (pairwise, both orders)"))
    if results.get("general"):
        tables.append(Table(["task", "metric", "base", "tuned", "delta"], [
            [task, key, fmt(m["base"]), fmt(m["tuned"]), fmt(m["delta"], True)]
            for task, metrics in results["general"].items() for key, m in metrics.items()],
            title="General ability (lm-evaluation-harness)"))
    return tables


def _plots(results: dict[str, Any], predictions: list[dict]) -> list[tuple[str, list[Markup]]]:
    """Per metric: each variant's mean, tuned − other, per-row scores (0/1: Wilson intervals, else histograms)."""
    variants, confidence, out = _variants(results), results["settings"]["confidence"], []
    for metric in results.get("metric_names") or []:
        charts = [bars(f"{metric}: mean", [(v, results["models"][v].get(metric)) for v in variants])]
        items = [(f"vs {o}", c["delta"], c["ci_low"], c["ci_high"], c["excludes_zero"])
                 for o, m, c in _pair_rows(results) if m == metric]
        if items:
            charts.append(deltas(f"{metric}: tuned − other", items))
        series = [(v, [s for p in predictions if (s := (p.get(f"{v}_scores") or {}).get(metric)) is not None])
                  for v in variants]
        if all(values and all(x in (0.0, 1.0) for x in values) for _, values in series):
            charts.append(proportions(f"{metric}: share of rows ({confidence:.0%} Wilson interval)", [
                (v, sum(x) / len(x), *wilson_interval(int(sum(x)), len(x), confidence), len(x)) for v, x in series]))
        else:
            charts.append(histogram(f"{metric}: per-row scores", series))
        out.append((metric, charts))
    return out


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, value) rows; lists joined with commas; numbers rounded for reading."""
    if isinstance(value, dict):
        rows = [row for key, item in value.items() for row in flatten(item, f"{prefix}.{key}" if prefix else str(key))]
        return rows if rows or not prefix else [(prefix, "-")]
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(str(v) for v in value) if value else "-")]
    return [(prefix, f"{value:.6g}" if isinstance(value, float) else "-" if value is None else str(value))]


def sample_rows(predictions: list[dict], count: int = SAMPLE_ROWS) -> list[dict]:
    """A fixed, evenly spaced sample of the default set's rows (the same rows on every run of the set)."""
    if len(predictions) <= count:
        return predictions
    return [predictions[i * len(predictions) // count] for i in range(count)]
