"""Scoring and base-vs-tuned comparison on fixed predictions (no model needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from eval.run import compare, format_table, score
from tailor.errors import TailorError
from tailor.recipe import load_recipe


def recipe(tmp_path: Path, eval_section: str):
    (tmp_path / "d.jsonl").write_text("{}\n")
    text = textwrap.dedent("""
        name: s
        model: {name_or_path: x/y}
        data: {sources: [{path: d.jsonl}]}
        eval:
    """).lstrip() + textwrap.indent(textwrap.dedent(eval_section), "  ")
    (tmp_path / "r.yaml").write_text(text)
    return load_recipe(tmp_path / "r.yaml")


ROWS = [{"id": str(i), "reference": label} for i, label in enumerate(["pos", "neg", "pos", "neg"] * 10)]


def test_classification_scores_and_paired_interval(tmp_path: Path) -> None:
    r = recipe(tmp_path, "metrics: [classification, exact_match]\nlabels: [pos, neg]\nbootstrap_resamples: 2000\n")
    base_predictions = ["pos"] * len(ROWS)  # right on half the rows
    tuned_predictions = [row["reference"] for row in ROWS[:-2]] + ["maybe", "maybe"]  # right on 38 of 40
    base, base_rows = score(base_predictions, ROWS, r)
    tuned, tuned_rows = score(tuned_predictions, ROWS, r)
    assert base["classification"] == 0.5 and tuned["classification"] == pytest.approx(38 / 40)
    report = tuned["classification_report"]
    assert report["outside_label_set"] == 2 and report["confusion"]["neg"]["<other>"] == 1
    comparisons, worst = compare({"base": base_rows, "tuned": tuned_rows}, ROWS, r)
    c = comparisons["classification"]
    assert c["delta"] == pytest.approx(0.45) and c["excludes_zero"] and c["ci_low"] > 0
    assert c["better"] == 19 and c["worse"] == 1
    assert [w["id"] for w in worst] == ["38"]  # right for the base ("pos"), "maybe" for the tuned model
    table = format_table({"rows": 40, "models": {"base": base, "tuned": tuned}, "comparisons": comparisons})
    assert "classification" in table and "*" in table


def test_identical_predictions_interval_contains_zero(tmp_path: Path) -> None:
    r = recipe(tmp_path, "metrics: [exact_match]\n")
    predictions = ["pos", "x"] * 20
    _, rows_a = score(predictions, ROWS, r)
    comparisons, worst = compare({"base": rows_a, "tuned": rows_a}, ROWS, r)
    c = comparisons["exact_match"]
    assert c["ci_low"] == c["ci_high"] == 0 and not c["excludes_zero"] and worst == []


def test_reference_outside_label_set_is_an_error(tmp_path: Path) -> None:
    r = recipe(tmp_path, "metrics: [classification]\nlabels: [pos, neg]\n")
    with pytest.raises(TailorError, match="eval.labels: .*'neutral'"):
        score(["pos"], [{"id": "0", "reference": "neutral"}], r)


@pytest.mark.parametrize("section,message", [
    ("metrics: [regex_match]\n", "needs eval.regex"),
    ("metrics: [json_schema_valid]\n", "needs eval.json_schema"),
    ("metrics: [exact_match]\nlabels: [a]\n",
     r"eval.labels is set but eval.metrics \(and grpo.rewards\) lack classification"),
    ("metrics: [bleu]\n", "Input should be 'exact_match'"),
])
def test_metric_options_are_checked(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(TailorError, match=message):
        recipe(tmp_path, section)


def test_regex_and_schema_metrics(tmp_path: Path) -> None:
    r = recipe(tmp_path, "metrics: [regex_match, json_schema_valid]\nregex: '[A-Z]{3}-\\d+'\n"
                         "json_schema: {type: object, required: [a]}\n")
    summary, _ = score(['{"a": 1}', "ABC-12"], [{"id": "0", "reference": ""}, {"id": "1", "reference": ""}], r)
    assert summary["regex_match"] == 0.5 and summary["json_schema_valid"] == 0.5
