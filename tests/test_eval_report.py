"""report.md / report.html: table, intervals, plots as inline SVG, exclusions; opened in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser import open_page
from conftest import write
from eval.report import render_html, render_markdown, write_reports
from eval.scoring import compare, compare_pair, metric_names, score
from tailor.recipe import load_recipe

ROWS = [{"id": f"r{i}", "prompt": f"<p>prompt {i} & more</p>", "reference": ["pos", "neg"][i % 2]} for i in range(30)]


def build(tmp_path: Path) -> tuple[dict, list[dict]]:
    """Results and predictions as the eval stage writes them, for three variants on fixed answers."""
    (tmp_path / "d.jsonl").write_text("{}\n")
    recipe = load_recipe(write(tmp_path / "r.yaml", """
        name: report
        model: {name_or_path: x/y}
        data: {sources: [{path: d.jsonl}]}
        eval: {metrics: [classification, token_f1], labels: [pos, neg], bootstrap_resamples: 500}
    """))
    answers = {"base": ["pos"] * 30,
               "tuned": [r["reference"] for r in ROWS[:27]] + ["maybe <b>", "neg", "pos"],
               "vendor": [r["reference"] for r in ROWS[:20]] + ["neg"] * 8 + [None, None]}
    results = {"rows": 30, "generation_rows": 30, "models": {}, "variants": {
        "base": {"kind": "base"}, "tuned": {"kind": "adapter"},
        "vendor": {"kind": "predictions", "missing_ids": 2, "extra_ids": 1, "missing_examples": ["r28", "r29"]}},
        "settings": recipe.eval.model_dump(mode="json"), "hashes": {"recipe": "abc"},
        "cost": {"wall_seconds": 12.5, "gpus": 0, "gpu_hours": 0.0, "cpu_hours": 0.0069,
                 "generation": {"base": {"tokens_per_second": 40.0}}}, "metric_names": metric_names(recipe)}
    per_row = {}
    for name, predictions in answers.items():
        results["models"][name], per_row[name] = score(predictions, ROWS, recipe)
        results["models"][name]["loss"] = {"base": 2.5, "tuned": 0.4}.get(name)
    results["pairs"], results["worst"] = {}, {}
    for name in ("base", "vendor"):
        results["pairs"][name], results["worst"][name] = compare_pair(per_row[name], per_row["tuned"], ROWS, recipe)
    results["comparisons"], _ = compare(per_row, ROWS, recipe)
    predictions = [{**row, **{n: answers[n][i] for n in answers}, **{f"{n}_scores": per_row[n][i] for n in answers}}
                   for i, row in enumerate(ROWS)]
    return results, predictions


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    results, predictions = build(tmp_path)
    md, html = write_reports(tmp_path, "report", results, predictions)
    shot = tmp_path / "report.png"
    page = open_page(html, shot, ["table#metrics", "table#pairs", "table#worst", "svg.plot", "svg.plot rect.bar",
                                  "svg.plot line.whisker", "#exclusions li", "table#cost",
                                  "table#samples tr", "table#settings"])
    assert page.console_errors == [] and page.page_errors == []
    assert shot.stat().st_size > 10_000
    assert page.counts["table#metrics"] == page.counts["table#pairs"] == page.counts["table#worst"] == 1
    # per metric: mean bars, tuned-minus-other deltas with whiskers (vs base, vs vendor), then the per-row scores:
    # both metrics are 0/1 on one-word answers, so shares with a Wilson whisker per variant, not a histogram
    assert page.counts["svg.plot"] == 3 * 2 and page.counts["svg.plot line.whisker"] == 2 * 2 + 2 * 3
    assert "share of rows (95% Wilson interval)" in html.read_text() and "per-row scores" not in html.read_text()
    assert page.counts["svg.plot rect.bar"] == 2 * (3 + 2 + 3)  # means, deltas, shares
    assert "classification" in page.texts["table#metrics"] and "0.500" in page.texts["table#metrics"]
    assert page.counts["#exclusions li"] >= 3 and "generation.base.tokens_per_second" in page.texts["table#cost"]
    assert "12.5" in page.texts["table#cost"] and "bootstrap_resamples" in page.texts["table#settings"]
    assert page.counts["table#samples tr"] == 1 + 8  # header + 8 evenly spaced rows of 30
    assert "<script" not in html.read_text() and "http" not in html.read_text().replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # offline: nothing to fetch, nothing to run


def test_report_contents_and_private_version(tmp_path: Path) -> None:
    results, predictions = build(tmp_path)
    md = render_markdown("report", results, predictions)
    c = results["comparisons"]["classification"]
    assert c["excludes_zero"] and c["better"] == 13 and c["worse"] == 1  # base says "pos" everywhere
    assert f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]*" in md
    assert "| vendor | classification |" in md and "vendor: 2 held-out rows have no prediction (e.g. r28, r29)" in md
    assert "tuned: 1 answers are outside the label set (counted wrong)." in md
    assert "`r28` classification: base 1.000 -> tuned 0.000" in md and "`r27` classification: vendor 1.000" in md
    html = render_html("report", results, predictions)
    assert "maybe &lt;b&gt;" in html and "<b>\n" not in html  # row text escaped
    # classification: per-label F1 of every variant and the most confused pairs (base answers "pos" everywhere)
    assert "## Classification per label" in md and "| label | rows | tuned F1 | base F1 | vendor F1 |" in md
    assert re.search(r"\| neg \| 15 \| 0\.\d+ \| 0\.000 \|", md) and "| base | neg | pos | 15 |" in md
    assert "## Sample predictions" in md and "| cost.wall_seconds |" not in md and "| wall_seconds | 12.5 |" in md
    private = render_html("report", results, predictions, include_text=False)
    assert "r27" in private and "maybe" not in private and "prompt 1" not in private
    assert "Sample predictions" not in private
    assert re.search(r"<svg class=\"plot\"", private)


@pytest.mark.parametrize(("successes", "n", "low", "high"), [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
                                                              (17, 98, 0.1112, 0.2604)])
def test_wilson_interval_matches_the_closed_form(successes: int, n: int, low: float, high: float) -> None:
    from eval.stats import wilson_interval

    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("values", [[], [0.0], [1.0] * 5])
def test_histogram_edges(values: list[float]) -> None:
    from tailor.report import histogram

    svg = histogram("t", [("a", values)])
    assert svg.startswith("<svg") and svg.endswith("</svg>") and f"a (n={len(values)})" in svg
