"""report.md and report.html of the eval stage: the verdict, every variant's metrics, tuned-vs-other differences with
paired intervals, better/worse counts, exclusions, plots (inline SVG; a 0/1 metric as a proportion with its Wilson
interval), a section per eval set, per-label F1 and the most confused labels (classification), a sample of
predictions, worst regressions, and cost, settings and hashes as tables.

`include_text=False` leaves out every prompt, reference and output (what goes to W&B unless
tracking.log_samples is on): only numbers and row ids remain.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from eval import svg
from eval.stats import wilson_interval
from tailor.runs import atomic_write_text

CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;
vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}.sig{font-weight:bold}.up{color:#2a7d2a}
.down{color:#b22222}.plots{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
pre{white-space:pre-wrap;background:#f7f7f7;padding:8px;max-height:300px;overflow:auto}
td.text{text-align:left;white-space:pre-wrap;max-width:320px;font-family:monospace;font-size:12px}
.note{color:#555}"""


def _f(value: Any, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _metric_keys(results: dict[str, Any]) -> list[str]:
    """Scalar metrics in display order: loss first, then the recipe's metrics, then derived numbers."""
    keys: list[str] = []
    for metrics in results["models"].values():
        for key, value in metrics.items():
            if isinstance(value, float) and key not in keys and not key.endswith("_excluded_rows"):
                keys.append(key)
    return keys


def _variants(results: dict[str, Any]) -> list[str]:
    names = list(results["models"])
    return ["tuned"] + [n for n in names if n != "tuned"] if "tuned" in names else names


def _pair_rows(results: dict[str, Any]) -> list[tuple[str, str, dict]]:
    return [(other, metric, c) for other, pair in results.get("pairs", {}).items() for metric, c in pair.items()]


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
        for key, value in metrics.items():
            if key.endswith("_excluded_rows"):
                notes.append(f"{name}: {key.removesuffix('_excluded_rows')} does not apply to {value} rows "
                             "(excluded from its mean).")
        if metrics.get("outside_label_set"):
            notes.append(f"{name}: {metrics['outside_label_set']} answers are outside the label set (counted wrong).")
        if metrics.get("think_unfinished"):
            notes.append(f"{name}: {metrics['think_unfinished']} answers never closed their think block (empty "
                         "answer, scored as given).")
    for other, metric, c in _pair_rows(results):
        if c.get("excluded"):
            notes.append(f"tuned vs {other}, {metric}: {c['excluded']} rows without both scores excluded "
                         f"(n={c['n']}).")
    return notes


# ------------------------------------------------------------------------------------------------ markdown


def render_markdown(name: str, results: dict[str, Any], predictions: list[dict], include_text: bool = True) -> str:
    variants = _variants(results)
    lines = [f"# Eval report: {name}", "",
             f"{results.get('generation_rows', results['rows'])} held-out rows generated, {results['rows']} for the "
             f"loss; variants: {', '.join(variants)}; backend {results.get('backend', 'hf')}. "
             f"Intervals: paired bootstrap, {results['settings']['confidence']:.0%}; * = the interval excludes 0.",
             *_markdown_gate(results), "", "## Metrics" + _set_title(results), "",
             "| metric | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for key in _metric_keys(results):
        lines.append(f"| {key} | " + " | ".join(_f(results["models"][v].get(key)) for v in variants) + " |")
    lines += ["", "## Tuned minus each other variant", "",
              "| vs | metric | other | tuned | delta | interval | better | worse | same | n | excluded |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for other, metric, c in _pair_rows(results):
        star = "*" if c["excludes_zero"] else ""
        lines.append(f"| {other} | {metric} | {_f(c['base_mean'])} | {_f(c['tuned_mean'])} | {_f(c['delta'], True)}"
                     f" | [{_f(c['ci_low'], True)}, {_f(c['ci_high'], True)}]{star} | {c['better']} | {c['worse']} | "
                     f"{c['same']} | {c['n']} | {c['excluded']} |")
    notes = _exclusions(results)
    if notes:
        lines += ["", "## Exclusions", ""] + [f"- {n}" for n in notes]
    lines += _markdown_extras(results)
    if include_text:
        lines += ["", "## Sample predictions", ""] + _markdown_samples(results, predictions)
    lines += ["", "## Worst regressions", ""] + _markdown_worst(results, predictions, include_text)
    for title, key in TABLES:
        lines += ["", f"## {title}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in flatten(results.get(key, {}))]
    return "\n".join(lines + [""])


TABLES = (("Cost", "cost"), ("Settings", "settings"), ("Hashes", "hashes"))
SAMPLE_ROWS = 8


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, value) rows; lists joined with commas; numbers rounded for reading."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows if rows or not prefix else [(prefix, "-")]
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value) if value else "-"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = "-" if value is None else str(value)
    return [(prefix, text)]


def sample_rows(predictions: list[dict], count: int = SAMPLE_ROWS) -> list[dict]:
    """A fixed, evenly spaced sample of the default set's rows (the same rows on every run of the set)."""
    if len(predictions) <= count:
        return predictions
    return [predictions[i * len(predictions) // count] for i in range(count)]


def _scores_text(scores: dict | None) -> str:
    return ", ".join(f"{k} {_f(v)}" for k, v in (scores or {}).items())


def _markdown_samples(results: dict[str, Any], predictions: list[dict]) -> list[str]:
    variants = _variants(results)
    lines = [f"{min(len(predictions), SAMPLE_ROWS)} of {len(predictions)} rows, evenly spaced (local report only; "
             "W&B gets row text only with tracking.log_samples).", ""]
    for row in sample_rows(predictions):
        lines.append(f"- `{row['id']}` reference: `{_short(row.get('reference'))}`")
        for name in variants:
            lines.append(f"  - {name}: `{_short(row.get(name))}` ({_scores_text(row.get(f'{name}_scores'))})")
    return lines


def _set_title(results: dict[str, Any]) -> str:
    return f" (eval set {results['set']})" if len(results.get("sets", {})) > 1 else ""


def _markdown_gate(results: dict[str, Any]) -> list[str]:
    """The promotion verdict, first thing in the report."""
    gate = results.get("gate")
    if not gate:
        return []
    return ["", "## Verdict", "", f"**{gate['decision']}**: {gate['reason']}"]


def _markdown_sets(results: dict[str, Any]) -> list[str]:
    """A section per eval set (base vs tuned with paired intervals), then the retention guard."""
    lines: list[str] = []
    sets = results.get("sets", {})
    if len(sets) > 1:
        for name, block in sets.items():
            lines += ["", f"## Eval set {name}", "",
                      f"{block['rows']} rows ({block['generation_rows']} generated)" +
                      (" — the default set, detailed above" if name == results.get("set") else ""), "",
                      "| metric | base | tuned | delta | interval | better | worse |", "|---|---|---|---|---|---|---|"]
            models, comparisons = block["models"], block.get("comparisons", {})
            tuned, base = models.get("tuned", {}), models.get("base", {})
            for key, value in tuned.items():
                if not isinstance(value, float) or key.endswith("_excluded_rows"):
                    continue
                c = comparisons.get(key)
                interval = f"[{_f(c['ci_low'], True)}, {_f(c['ci_high'], True)}]{'*' if c['excludes_zero'] else ''}" \
                    if c else ""
                delta = block.get("delta", {}).get(key)
                lines.append(f"| {key} | {_f(base.get(key))} | {_f(value)} | {_f(delta, True)} | {interval} | "
                             f"{c['better'] if c else ''} | {c['worse'] if c else ''} |")
    retention = results.get("retention")
    if retention:
        lines += ["", "## Retention (loss on general text)", "",
                  f"Mean per-row loss of the answer tokens, base vs tuned; a positive delta is a loss increase "
                  f"(lost general ability). Cost: {retention['seconds']:.1f} s.", "",
                  "| set | base loss | tuned loss | delta | interval | rows | rows with higher loss |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in retention["sets"].items():
            lines.append(f"| {name} | {_f(r['base_loss'])} | {_f(r['tuned_loss'])} | {_f(r['delta'], True)} | "
                         f"[{_f(r['ci_low'], True)}, {_f(r['ci_high'], True)}] | {r['rows']} | "
                         f"{r['rows_higher_loss']} |")
    return lines


def _markdown_classification(results: dict[str, Any]) -> list[str]:
    """Per-label F1 of every variant and the most confused (reference -> answer) pairs, from the classification
    report of the default set."""
    reports = {v: m["classification_report"] for v, m in results["models"].items()
               if isinstance(m.get("classification_report"), dict)}
    if not reports:
        return []
    variants = [v for v in _variants(results) if v in reports]
    labels = list(next(iter(reports.values()))["per_label"])
    lines = ["", "## Classification per label" + _set_title(results), "",
             "| label | rows | " + " | ".join(f"{v} F1" for v in variants) + " |", "|---|---|" + "---|" * len(variants)]
    for label in labels:
        support = reports[variants[0]]["per_label"][label]["support"]
        lines.append(f"| {label} | {support:.0f} | " + " | ".join(
            _f(reports[v]["per_label"][label]["f1"]) for v in variants) + " |")
    lines += ["", "Most confused labels (reference -> answer, rows):", "", "| model | reference | answer | rows |",
              "|---|---|---|---|"]
    for variant in variants:
        pairs = [(ref, pred, n) for ref, row in reports[variant]["confusion"].items() for pred, n in row.items()
                 if pred != ref and n > 0]
        for ref, pred, n in sorted(pairs, key=lambda p: -p[2])[:5]:
            lines.append(f"| {variant} | {ref} | {pred} | {n} |")
    return lines


def _markdown_extras(results: dict[str, Any]) -> list[str]:
    lines = _markdown_classification(results) + _markdown_sets(results)
    if results.get("judge"):
        lines += ["", "## LLM judge (pairwise, both orders)", "", "| vs | win rate | interval | wins | losses | "
                  "ties | position flips | invalid |", "|---|---|---|---|---|---|---|---|"]
        for other, j in results["judge"].items():
            lines.append(f"| {other} | {_f(j.get('win_rate'))} | [{_f(j.get('ci_low'))}, {_f(j.get('ci_high'))}] | "
                         f"{j['wins']} | {j['losses']} | {j['ties']} | {j['position_flips']} | "
                         f"{j['invalid_replies']} |")
    if results.get("general"):
        lines += ["", "## General ability (lm-evaluation-harness)", "", "| task | metric | base | tuned | delta |",
                  "|---|---|---|---|---|"]
        for task, metrics in results["general"].items():
            for key, m in metrics.items():
                lines.append(f"| {task} | {key} | {_f(m['base'])} | {_f(m['tuned'])} | {_f(m['delta'], True)} |")
    return lines


def _worst_items(results: dict[str, Any]) -> list[tuple[str, dict]]:
    return [(other, w) for other, items in results.get("worst", {}).items() for w in items]


def _markdown_worst(results: dict[str, Any], predictions: list[dict], include_text: bool) -> list[str]:
    items = _worst_items(results)
    if not items:
        return ["No row scored lower for tuned than for any other variant."]
    by_id = {p["id"]: p for p in predictions}
    lines = []
    for other, w in items:
        lines.append(f"- `{w['id']}` {w['metric']}: {other} {_f(w['other'])} -> tuned {_f(w['tuned'])}")
        row = by_id.get(w["id"])
        if include_text and row:
            for key in ("reference", other, "tuned"):
                lines.append(f"  - {key}: `{_short(row.get(key))}`")
    return lines


def _short(text: Any, limit: int = 300) -> str:
    text = "" if text is None else str(text)
    text = text.replace("`", "'").replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit] + "…"


# ------------------------------------------------------------------------------------------------ html


def render_html(name: str, results: dict[str, Any], predictions: list[dict], include_text: bool = True) -> str:
    variants = _variants(results)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Eval report: {escape(name)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Eval report: {escape(name)}</h1>",
             f"<p class=\"note\">{results.get('generation_rows', results['rows'])} held-out rows generated, "
             f"{results['rows']} for the loss; variants: {escape(', '.join(variants))}; backend "
             f"{escape(str(results.get('backend', 'hf')))}; written {time.strftime('%Y-%m-%d %H:%M')}. Intervals: "
             f"paired bootstrap over rows, {results['settings']['confidence']:.0%}; <b>bold</b> = the interval of "
             "the difference excludes 0.</p>", _md_tables_to_html(_markdown_gate(results)),
             f"<h2>Metrics{escape(_set_title(results))}</h2>", _html_metrics(results, variants), "<h2>Tuned minus each other variant</h2>",
             _html_pairs(results), "<h2>Plots</h2>", _html_plots(results, predictions, variants)]
    notes = _exclusions(results)
    if notes:
        parts.append("<h2>Exclusions</h2><ul id=\"exclusions\">" + "".join(f"<li>{escape(n)}</li>" for n in notes)
                     + "</ul>")
    extras = _markdown_extras(results)
    if extras:
        parts.append(_md_tables_to_html(extras))
    if include_text:
        parts += ["<h2>Sample predictions</h2>", _html_samples(results, predictions)]
    parts += ["<h2>Worst regressions</h2>", _html_worst(results, predictions, include_text)]
    for title, key in TABLES:
        body = "".join(f"<tr><td class=\"l\">{escape(k)}</td><td class=\"l\">{escape(v)}</td></tr>"
                       for k, v in flatten(results.get(key, {})))
        parts.append(f"<h2>{title}</h2><table id=\"{key}\"><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_metrics(results: dict[str, Any], variants: list[str]) -> str:
    base = results.get("comparisons", {})
    head = "".join(f"<th>{escape(v)}</th>" for v in variants)
    rows = []
    for key in _metric_keys(results):
        cells = "".join(f"<td>{_f(results['models'][v].get(key))}</td>" for v in variants)
        c = base.get(key)
        if c:
            cls = "sig " + ("up" if c["delta"] > 0 else "down") if c["excludes_zero"] else ""
            extra = (f"<td class=\"{cls}\">{_f(c['delta'], True)}</td><td class=\"{cls}\">[{_f(c['ci_low'], True)}, "
                     f"{_f(c['ci_high'], True)}]</td><td>{c['better']}/{c['worse']}</td>")
        else:
            delta = results.get("delta", {}).get(key)
            extra = f"<td>{_f(delta, True)}</td><td></td><td></td>"
        rows.append(f"<tr><td class=\"l\">{escape(key)}</td>{cells}{extra}</tr>")
    return (f"<table id=\"metrics\"><thead><tr><th class=\"l\">metric</th>{head}<th>tuned − base</th>"
            f"<th>interval</th><th>better/worse</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _html_pairs(results: dict[str, Any]) -> str:
    rows = []
    for other, metric, c in _pair_rows(results):
        cls = "sig " + ("up" if c["delta"] > 0 else "down") if c["excludes_zero"] else ""
        rows.append(f"<tr><td class=\"l\">{escape(other)}</td><td class=\"l\">{escape(metric)}</td>"
                    f"<td>{_f(c['base_mean'])}</td><td>{_f(c['tuned_mean'])}</td><td class=\"{cls}\">"
                    f"{_f(c['delta'], True)}</td><td class=\"{cls}\">[{_f(c['ci_low'], True)}, "
                    f"{_f(c['ci_high'], True)}]</td><td>{c['better']}</td><td>{c['worse']}</td><td>{c['same']}</td>"
                    f"<td>{c['n']}</td><td>{c['excluded']}</td></tr>")
    if not rows:
        return "<p>No other variant to compare with (eval.compare_base is off and nothing else was given).</p>"
    return ("<table id=\"pairs\"><thead><tr><th class=\"l\">vs</th><th class=\"l\">metric</th><th>other</th>"
            "<th>tuned</th><th>delta</th><th>interval</th><th>better</th><th>worse</th><th>same</th><th>n</th>"
            f"<th>excluded</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _html_plots(results: dict[str, Any], predictions: list[dict], variants: list[str]) -> str:
    blocks = []
    for metric in results.get("metric_names") or []:
        charts = [svg.bars(f"{metric}: mean", [(v, results["models"][v].get(metric)) for v in variants])]
        items = [(f"vs {other}", c["delta"], c["ci_low"], c["ci_high"], c["excludes_zero"])
                 for other, pair in results.get("pairs", {}).items() for m, c in pair.items() if m == metric]
        if items:
            charts.append(svg.deltas(f"{metric}: tuned − other", items))
        series = [(v, [s for p in predictions if (s := (p.get(f"{v}_scores") or {}).get(metric)) is not None])
                  for v in variants]
        if all(values and all(x in (0.0, 1.0) for x in values) for _, values in series):
            confidence = results["settings"]["confidence"]
            items = [(v, sum(values) / len(values), *wilson_interval(int(sum(values)), len(values), confidence),
                      len(values)) for v, values in series]
            charts.append(svg.proportions(f"{metric}: share of rows ({confidence:.0%} Wilson interval)", items))
        else:
            charts.append(svg.histogram(f"{metric}: per-row scores", series))
        blocks.append(f"<div class=\"plots\" data-metric=\"{escape(metric)}\">{''.join(charts)}</div>")
    return "".join(blocks)


def _html_samples(results: dict[str, Any], predictions: list[dict]) -> str:
    variants = _variants(results)
    head = "<th class=\"l\">id</th><th class=\"l\">reference</th>" + "".join(
        f"<th class=\"l\">{escape(v)}</th>" for v in variants)
    rows = []
    for row in sample_rows(predictions):
        cells = "".join(f"<td class=\"text\">{escape(_short(row.get(v), 600))}<br><span class=\"note\">"
                        f"{escape(_scores_text(row.get(f'{v}_scores')))}</span></td>" for v in variants)
        rows.append(f"<tr><td class=\"l\">{escape(str(row['id']))}</td><td class=\"text\">"
                    f"{escape(_short(row.get('reference'), 600))}</td>{cells}</tr>")
    return (f"<p class=\"note\">{len(rows)} of {len(predictions)} rows, evenly spaced (local report only).</p>"
            f"<table id=\"samples\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _html_worst(results: dict[str, Any], predictions: list[dict], include_text: bool) -> str:
    items = _worst_items(results)
    if not items:
        return "<p>No row scored lower for tuned than for any other variant.</p>"
    by_id = {p["id"]: p for p in predictions}
    head = "<th class=\"l\">id</th><th class=\"l\">vs</th><th>metric</th><th>other</th><th>tuned</th>"
    if include_text:
        head += "<th class=\"l\">reference</th><th class=\"l\">other's answer</th><th class=\"l\">tuned answer</th>"
    rows = []
    for other, w in items:
        cells = (f"<td class=\"l\">{escape(str(w['id']))}</td><td class=\"l\">{escape(other)}</td>"
                 f"<td>{escape(w['metric'])}</td><td>{_f(w['other'])}</td><td>{_f(w['tuned'])}</td>")
        row = by_id.get(w["id"], {})
        if include_text:
            cells += "".join(f"<td class=\"text\">{escape(_short(row.get(k), 600))}</td>"
                             for k in ("reference", other, "tuned"))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table id=\"worst\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _md_tables_to_html(lines: list[str]) -> str:
    """Sections written as markdown (gate, eval sets, retention, judge, general ability): headings, tables and
    paragraphs as HTML."""
    out, table = [], []

    def flush() -> None:
        if table:
            cells = [[escape(c.strip()) for c in r.strip("|").split("|")] for r in table if not r.startswith("|---")]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{escape(line[3:])}</h2>")
        elif line.startswith("**") and "**" in line[2:]:
            strong, _, rest = line[2:].partition("**")
            out.append(f"<p id=\"verdict\"><b>{escape(strong)}</b>{escape(rest)}</p>")
        elif line.strip():
            out.append(f"<p>{escape(line)}</p>")
    flush()
    return "".join(out)


def write_reports(folder: Path, name: str, results: dict[str, Any], predictions: list[dict]) -> tuple[Path, Path]:
    """Write report.md and report.html (atomically) next to results.json."""
    md, html = folder / "report.md", folder / "report.html"
    atomic_write_text(md, render_markdown(name, results, predictions))
    atomic_write_text(html, render_html(name, results, predictions))
    return md, html
