"""The HTML comparison report: one self-contained page (inline SVG and CSS, no script, nothing fetched)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tailor.runs import atomic_write_text

if TYPE_CHECKING:
    from tailor.compare import RunView

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
          "#7f7f7f"]
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
.corrupt{background:#fdd}.partial{background:#ffe9c6}.note{color:#666}
svg text{font:11px system-ui,sans-serif;fill:#333}.axis{stroke:#999}.grid{stroke:#eee}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
"""


def write_report(path: Path, runs: list["RunView"], keys: list[str], metrics: list[str],
                 best: str | None = None) -> None:
    """Write the report for `runs` (as ordered) to `path`, atomically."""
    atomic_write_text(path, render(runs, keys, metrics, best))


def render(runs: list["RunView"], keys: list[str], metrics: list[str], best: str | None = None) -> str:
    from tailor.compare import table_keys, table_rows

    color = {run.path: COLORS[i % len(COLORS)] for i, run in enumerate(runs)}
    header, rows = table_rows(runs, table_keys(keys), metrics)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tailor: compare "
             f"{len(runs)} runs</title><style>{CSS}</style></head><body>",
             f"<h1>Comparing {len(runs)} run{'s' if len(runs) != 1 else ''}</h1>"]
    if best:
        from tailor.compare import best_summary

        parts.append(f"<p id='best'>{escape(best_summary(runs, best)).replace(chr(10), '<br>')}</p>")
    parts.append("<h2>Summary</h2>" + _table(header, rows, [r.status for r in runs], color, runs))
    parts.append("<p class='note'>Metrics: tuned model; in brackets the change vs the base model with its paired "
                 "bootstrap interval (* = the interval excludes 0).</p>")
    parts.append("<h2>Training loss</h2>" + loss_chart(runs, color))
    parts.append("<h2>Change vs base, with intervals</h2>" + "".join(metric_bars(runs, m, color) for m in metrics))
    parts.append("<h2>Recipe differences</h2>" + _recipe_diff(runs, keys))
    parts.append("<h2>Lineage</h2>" + _lineage(runs))
    problems = [(r, p) for r in runs for p in r.problems]
    if problems:
        items = "".join(f"<li class='{r.status}'><b>{escape(r.status)}</b> {escape(str(r.path))}: {escape(p)}</li>"
                        for r, p in problems)
        parts.append(f"<h2>Problems</h2><ul id='problems'>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(header: list[str], rows: list[list[str]], statuses: list[str], color: dict, runs: list) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for run, row, status in zip(runs, rows, statuses):
        swatch = f"<span class='swatch' style='background:{color[run.path]}'></span>"
        cells = [f"<td>{swatch}{escape(row[0])}</td>", *(f"<td>{escape(c)}</td>" for c in row[1:])]
        body.append(f"<tr class='{escape(status)}'>{''.join(cells)}</tr>")
    return f"<table id='summary'><tr>{head}</tr>{''.join(body)}</table>"


def loss_chart(runs: list["RunView"], color: dict, width: int = 720, height: int = 300) -> str:
    """Overlaid training-loss curves, one SVG path per run, on shared axes."""
    curves = [(run, run.loss_curve) for run in runs if len(run.loss_curve) >= 1]
    if not curves:
        return "<p class='note'>No run has a training-loss history (adapter/train_metrics.json).</p>"
    left, right, top, bottom = 56, 16, 12, 36
    xs = [x for _, c in curves for x, _ in c]
    ys = [y for _, c in curves for _, y in c]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)  # noqa: E731
    out = [f"<svg class='loss-curves' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"xmlns='http://www.w3.org/2000/svg' role='img' aria-label='training loss by step'>"]
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f"<line class='grid' x1='{left}' x2='{width - right}' y1='{sy(y):.1f}' y2='{sy(y):.1f}'/>"
                   f"<text x='{left - 6}' y='{sy(y) + 4:.1f}' text-anchor='end'>{y:.3g}</text>")
        x = x0 + (x1 - x0) * i / 4
        out.append(f"<text x='{sx(x):.1f}' y='{height - bottom + 16}' text-anchor='middle'>{x:.0f}</text>")
    out.append(f"<line class='axis' x1='{left}' x2='{left}' y1='{top}' y2='{height - bottom}'/>"
               f"<line class='axis' x1='{left}' x2='{width - right}' y1='{height - bottom}' y2='{height - bottom}'/>"
               f"<text x='{(left + width - right) / 2}' y='{height - 4}' text-anchor='middle'>step</text>")
    for run, curve in curves:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(curve))
        if len(curve) == 1:
            d += " l0.1,0"
        out.append(f"<path class='curve' data-run='{escape(run.name)}' d='{d}' fill='none' "
                   f"stroke='{color[run.path]}' stroke-width='2' stroke-linecap='round'>"
                   f"<title>{escape(run.name)}</title></path>")
    out.append("</svg>")
    legend = "".join(f"<span><span class='swatch' style='background:{color[r.path]}'></span>{escape(r.name)}"
                     f"&nbsp;&nbsp;</span>" for r, _ in curves)
    return "".join(out) + f"<div class='legend'>{legend}</div>"


def metric_bars(runs: list["RunView"], metric: str, color: dict, width: int = 720) -> str:
    """One bar per run: the change vs base (or the tuned value when there is no base), with its interval."""
    items = []
    for run in runs:
        c = run.comparisons.get(metric) or {}
        if all(isinstance(c.get(k), (int, float)) for k in ("delta", "ci_low", "ci_high")):
            items.append((run, float(c["delta"]), float(c["ci_low"]), float(c["ci_high"])))
        elif metric in run.tuned and metric in run.base:
            items.append((run, run.tuned[metric] - run.base[metric], None, None))
    if not items:
        return ""
    row, left, right = 22, 170, 170
    height = row * len(items) + 30
    values = [v for _, d, lo, hi in items for v in (d, lo, hi, 0.0) if v is not None]
    v0, v1 = min(values), max(values)
    v1 = v1 if v1 > v0 else v0 + 1
    sx = lambda v: left + (v - v0) / (v1 - v0) * (width - left - right)  # noqa: E731
    out = [f"<h3>{escape(metric)}</h3><svg class='metric-bars' data-metric='{escape(metric)}' width='{width}' "
           f"height='{height}' viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg'>"]
    for i, (run, delta, lo, hi) in enumerate(items):
        y = 8 + i * row
        a, b = sorted((sx(0.0), sx(delta)))
        out.append(f"<text x='{left - 6}' y='{y + 13}' text-anchor='end'>{escape(run.name[:26])}</text>"
                   f"<rect class='bar' x='{a:.1f}' y='{y + 3}' width='{max(b - a, 1):.1f}' height='{row - 8}' "
                   f"fill='{color[run.path]}' opacity='0.75'><title>{escape(run.name)}: {delta:+.4f}</title></rect>")
        if lo is not None and hi is not None:
            mid = y + row / 2
            out.append(f"<path class='interval' d='M{sx(lo):.1f},{mid:.1f} H{sx(hi):.1f} M{sx(lo):.1f},{mid - 5:.1f} "
                       f"V{mid + 5:.1f} M{sx(hi):.1f},{mid - 5:.1f} V{mid + 5:.1f}' stroke='#222' fill='none'/>")
        label = f"{delta:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")
        out.append(f"<text x='{width - right + 4}' y='{y + 13}'>{escape(label)}</text>")
    zero = sx(0.0)
    out.append(f"<line class='axis' x1='{zero:.1f}' x2='{zero:.1f}' y1='4' y2='{height - 22}'/>"
               f"<text x='{sx(v0):.1f}' y='{height - 6}'>{v0:+.3g}</text>"
               f"<text x='{sx(v1):.1f}' y='{height - 6}' text-anchor='end'>{v1:+.3g}</text></svg>")
    return "".join(out)


def _recipe_diff(runs: list["RunView"], keys: list[str]) -> str:
    from tailor.compare import recipe_value

    if not keys:
        return "<p class='note'>The recipes do not differ (the run name aside), or fewer than two have one.</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>{escape(r.name)}</th>" for r in runs) + "</tr>"
    body = "".join(f"<tr><td><code>{escape(k)}</code></td>"
                   + "".join(f"<td>{escape(recipe_value(r, k))}</td>" for r in runs) + "</tr>" for k in keys)
    return f"<table id='recipe-diff'>{head}{body}</table>"


def _lineage(runs: list["RunView"]) -> str:
    head = ("<tr><th>run</th><th>recipe hash</th><th>git commit</th><th>data card</th><th>packages</th>"
            "<th>launch</th><th>hardware</th></tr>")
    body = []
    for run in runs:
        lineage = run.record.get("lineage") or {}
        code = lineage.get("code") or {}
        packages = ", ".join(f"{k} {v}" for k, v in (code.get("packages") or {}).items() if v)
        hw = lineage.get("hardware") or {}
        device = f"{hw.get('gpu_count')} x {hw.get('gpu_model')}" if hw.get("gpu_count") else \
            f"CPU {hw.get('cpu_model') or '?'} ({hw.get('cpu_cores') or '?'} cores)"
        launch = lineage.get("launch") or {}
        commit = (code.get("git_commit") or "?")[:12] + (" dirty" if code.get("git_dirty") else "")
        cells = [run.name, str(run.record.get("recipe_hash") or "?")[:12], commit,
                 str(lineage.get("data_card_hash") or "?")[:12], packages,
                 f"{launch.get('strategy', '?')} x{launch.get('world_size', '?')}", device if hw else "?"]
        body.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table id='lineage'>{head}{''.join(body)}</table>"
