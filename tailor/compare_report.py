"""The HTML comparison report (templates/compare_report.html): one self-contained page, no script, nothing fetched.
tailor.compare hands over everything it computed, so this module never imports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup

from tailor.report import PALETTE, Table, deltas, lines, render
from tailor.runs import atomic_write_text


def write_report(path: Path, runs: list[Any], table: tuple[list[str], list[list[str]]], diff: list[list[str]],
                 metrics: list[str], best: str | None = None) -> None:
    """Write the report to `path`, atomically."""
    atomic_write_text(path, render_html(runs, table, diff, metrics, best))


def render_html(runs: list[Any], table: tuple[list[str], list[list[str]]], diff: list[list[str]], metrics: list[str],
                best: str | None = None) -> str:
    """The page for `runs` (tailor.compare.RunView): summary `table`, recipe `diff` rows, loss curves, a change-vs-base
    chart per metric, lineage, problems, and the `best` summary first."""
    header, rows = table
    swatch = [Markup('<span class="swatch" style="background:{}"></span>').format(PALETTE[i % len(PALETTE)])
              for i in range(len(runs))]
    summary = Table(header, [[swatch[i] + row[0], *row[1:]] for i, row in enumerate(rows)], "summary", "Summary",
                    row_classes=[r.status for r in runs])
    recipe = Table(["key", *(r.name for r in runs)], [[Markup("<code>{}</code>").format(k), *v] for k, *v in diff],
                   "recipe-diff", "Recipe differences")
    curves = [(r.name, r.loss_curve) for r in runs]
    loss = lines("Training loss by step", curves, cls="plot loss-curves") if any(c for _, c in curves) else None
    return render("compare_report.html", runs=runs, best=best, summary=summary, recipe=recipe, loss=loss,
                  charts=[c for m in metrics if (c := _metric_chart(runs, m))], lineage=_lineage(runs),
                  problems=[(r, p) for r in runs for p in r.problems])


def _metric_chart(runs: list[Any], metric: str) -> Markup | None:
    """A bar per run: the change vs base with its interval (without one when the run has none)."""
    items = []
    for run in runs:
        c = run.comparisons.get(metric) or {}
        if all(isinstance(c.get(k), (int, float)) for k in ("delta", "ci_low", "ci_high")):
            items.append((run.name, float(c["delta"]), float(c["ci_low"]), float(c["ci_high"]),
                          bool(c.get("excludes_zero"))))
        elif metric in run.tuned and metric in run.base:
            items.append((run.name, run.tuned[metric] - run.base[metric], None, None, False))
    return deltas(f"{metric}: tuned − base", items, width=720, cls="plot metric-bars") if items else None


def _lineage(runs: list[Any]) -> Table:
    rows = []
    for run in runs:
        lineage = run.record.get("lineage") or {}
        code, hw, launch = (lineage.get(k) or {} for k in ("code", "hardware", "launch"))
        device = f"{hw.get('gpu_count')} x {hw.get('gpu_model')}" if hw.get("gpu_count") else \
            f"CPU {hw.get('cpu_model') or '?'} ({hw.get('cpu_cores') or '?'} cores)" if hw else "?"
        rows.append([run.name, str(run.record.get("recipe_hash") or "?")[:12],
                     (code.get("git_commit") or "?")[:12] + (" dirty" if code.get("git_dirty") else ""),
                     str(lineage.get("data_card_hash") or "?")[:12],
                     ", ".join(f"{k} {v}" for k, v in (code.get("packages") or {}).items() if v),
                     f"{launch.get('strategy', '?')} x{launch.get('world_size', '?')}", device])
    return Table(["run", "recipe hash", "git commit", "data card", "packages", "launch", "hardware"], rows, "lineage",
                 "Lineage")
