"""Eval per set, the retention guard and the promotion gate: the verdict logic on constructed results, then
data -> train -> eval end to end on the tiny model with two named sets (one CSV) plus the hash split."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import chat_rows, write
from tailor.recipe import load_recipe
from tailor.runs import read_json, run_paths
from tailor.schema import GateSettings
from test_eval_sets import csv_rows, sets_recipe
from test_pipeline import inspect_runs, run_stage


def results_with(low: float, high: float, retention: tuple[float, float] | None = None) -> dict:
    comparison = {"delta": (low + high) / 2, "ci_low": low, "ci_high": high}
    results = {"sets": {"test": {"comparisons": {"exact_match": comparison}}}}
    if retention is not None:
        results["retention"] = {"sets": {"gsm8k": {"delta": sum(retention) / 2, "ci_low": retention[0],
                                                   "ci_high": retention[1]}}}
    return results


def test_verdict_promotes_only_when_the_whole_interval_is_above_min_delta() -> None:
    from eval.gate import verdict

    gate = GateSettings(metric="exact_match", set="test", min_delta=0.0)
    promoted = verdict(results_with(0.05, 0.20), gate, "test")
    assert promoted["decision"] == "PROMOTE" and promoted["promote"]
    assert "exact_match on test: +0.1250 [+0.0500, +0.2000] lies above +0.0000" == promoted["reason"]
    held = verdict(results_with(-0.01, 0.20), gate, "test")
    assert held["decision"] == "HOLD" and "does not lie entirely above" in held["reason"]
    assert verdict(results_with(0.0, 0.0), gate, "test")["decision"] == "HOLD"  # no change: hold
    stricter = GateSettings(metric="exact_match", set="test", min_delta=0.1)
    assert verdict(results_with(0.05, 0.20), stricter, "test")["decision"] == "HOLD"
    missing = verdict(results_with(0.05, 0.20), GateSettings(metric="token_f1"), "test")
    assert missing["decision"] == "HOLD" and "no paired interval" in missing["reason"]


def test_verdict_holds_when_retention_may_have_dropped_beyond_its_limit() -> None:
    from eval.gate import verdict

    gate = GateSettings(metric="exact_match", set="test", retention_max_drop=0.02)
    ok = verdict(results_with(0.05, 0.2, retention=(-0.01, 0.015)), gate, "test")
    assert ok["decision"] == "PROMOTE" and "retention gsm8k" in ok["reason"] and "within" in ok["reason"]
    dropped = verdict(results_with(0.05, 0.2, retention=(0.01, 0.05)), gate, "test")
    assert dropped["decision"] == "HOLD" and dropped["reason"].startswith("retention gsm8k: loss +0.0300")
    unmeasured = verdict(results_with(0.05, 0.2), gate, "test")
    assert unmeasured["decision"] == "HOLD" and "no retention set" in unmeasured["reason"]


def test_gate_settings_are_checked_with_the_recipe(tmp_path: Path, tiny_qwen25: Path) -> None:
    from tailor.errors import TailorError

    path = sets_recipe(tmp_path, tiny_qwen25, chat_rows(4), csv_rows(2))
    with pytest.raises(TailorError, match="eval.gate.set 'hard' is not an eval set"):
        load_recipe(path, ["eval.gate={metric: exact_match, set: hard}"])
    with pytest.raises(TailorError, match="needs eval.retention"):
        load_recipe(path, ["eval.gate={metric: exact_match, retention_max_drop: 0.1}"])
    with pytest.raises(TailorError, match="needs eval.compare_base"):
        load_recipe(path, ["eval.gate={metric: exact_match}", "eval.compare_base=false"])
    assert load_recipe(path, ["eval.gate={metric: exact_match}"]).eval.gate.set is None


GATE = """eval:
  metrics: [exact_match, json_valid]
  max_new_tokens: 6
  batch_size: 8
  max_rows: 8
  bootstrap_resamples: 1000
  retention: {sets: [gsm8k], max_rows: 6}
  gate: {metric: exact_match, set: test, min_delta: 0.0, retention_max_drop: 0.02}
"""


@pytest.fixture(scope="module")
def sets_run(tmp_path_factory, tiny_qwen25: Path):
    """data -> train (lr so small the adapter changes nothing) -> eval --gate on two named sets plus the hash
    split, with the retention guard and offline W&B for the eval stage."""
    tmp = tmp_path_factory.mktemp("sets")
    path = sets_recipe(tmp, tiny_qwen25, chat_rows(40), csv_rows(7), chat_rows(5, offset=500))
    text = path.read_text().replace("eval: {metrics: [exact_match, json_valid], max_new_tokens: 8, batch_size: 8}\n",
                                    GATE)
    text = text.replace("training: {max_steps: 2,", "training: {max_steps: 1, lr: 1.0e-12, warmup_ratio: 0,")
    write(path, text)
    from data_prep.prepare import prepare
    from train.run import train

    recipe = load_recipe(path)
    prepare(recipe)  # in-process: the CLI stages are covered by test_pipeline.py
    train(recipe)
    evaluated = run_stage("eval", str(path), "tracking.mode=offline", "--gate")
    return path, recipe, evaluated


def test_every_set_is_scored_and_the_gate_holds_with_exit_code_3(sets_run) -> None:
    _, recipe, evaluated = sets_run
    assert evaluated.returncode == 3, evaluated.stderr[-3000:]
    assert "gate: HOLD: exact_match on test: +0.0000 [+0.0000, +0.0000] does not lie entirely above" in evaluated.stdout
    paths = run_paths(recipe)
    results = read_json(paths.results)
    assert list(results["sets"]) == ["heldout", "test", "hard"] and results["set"] == "heldout"
    manifest = read_json(paths.manifest)
    assert results["sets"]["test"]["rows"] == 7 and results["sets"]["hard"]["rows"] == 5
    assert results["rows"] == min(8, manifest["rows"]["heldout"])
    for name, block in results["sets"].items():
        assert set(block["models"]) == {"base", "tuned"}
        assert set(block["comparisons"]) == {"exact_match", "json_valid"}
        # an adapter trained with lr 1e-12 answers exactly like the base model
        assert all(c["better"] == c["worse"] == 0 for c in block["comparisons"].values()), name
        assert block["models"]["tuned"]["loss"] == pytest.approx(block["models"]["base"]["loss"], abs=1e-4)
    # the default set's block is also the top level, for existing readers (compare, report, tests)
    assert results["models"] == results["sets"]["heldout"]["models"]
    assert results["comparisons"] == results["sets"]["heldout"]["comparisons"]
    gate = results["gate"]
    assert gate["decision"] == "HOLD" and not gate["promote"] and gate["set"] == "test"
    retention = results["retention"]
    assert retention["sets"]["gsm8k"]["rows"] == 6 and retention["seconds"] > 0
    assert retention["sets"]["gsm8k"]["delta"] == pytest.approx(0.0, abs=1e-4)
    assert "retention gsm8k" in gate["reason"] or gate["checks"][1]["passed"]
    record = read_json(paths.record)["stages"]["eval"]
    assert record["gate"]["decision"] == "HOLD" and set(record["sets"]) == {"heldout", "test", "hard"}
    for name in ("heldout", "test", "hard"):
        lines = (paths.eval_dir / "sets" / name / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == results["sets"][name]["generation_rows"]
    report = (paths.eval_dir / "report.md").read_text()
    assert "## Verdict" in report and "**HOLD**" in report
    assert "## Eval set test" in report and "## Eval set hard" in report and "## Retention" in report
    html = (paths.eval_dir / "report.html").read_text()
    assert 'id="verdict"' in html and "Eval set hard" in html


def test_wandb_eval_run_holds_per_set_metrics_and_the_verdict(sets_run) -> None:
    _, recipe, _ = sets_run
    runs = inspect_runs(run_paths(recipe).root / "wandb")
    summary = runs["sets-eval"]["summary"]
    results = read_json(run_paths(recipe).results)
    for name in ("heldout", "test", "hard"):
        assert summary[f"eval/{name}/exact_match"] == pytest.approx(results["sets"][name]["models"]["tuned"]
                                                                    ["exact_match"])
        assert f"eval/{name}/ci/json_valid/low" in summary
    assert summary["eval/gate/promote"] == 0 and summary["eval/gate/decision"] == "HOLD"
    assert "eval/retention/gsm8k/delta" in summary


def test_eval_sets_env_and_recipe_key_limit_a_run(tmp_path: Path, tiny_qwen25: Path, monkeypatch) -> None:
    from eval.sets import selected_sets
    from tailor.errors import TailorError

    path = sets_recipe(tmp_path, tiny_qwen25, chat_rows(4), csv_rows(2), chat_rows(2, offset=50))
    assert selected_sets(load_recipe(path)) == ["heldout", "test", "hard"]
    assert selected_sets(load_recipe(path, ["eval.sets=[hard, test]"])) == ["hard", "test"]
    monkeypatch.setenv("EVAL_SETS", "test, hard,test")
    assert selected_sets(load_recipe(path, ["eval.sets=[heldout]"])) == ["test", "hard"]  # the environment wins
    monkeypatch.setenv("EVAL_SETS", "easy")
    with pytest.raises(TailorError, match="EVAL_SETS=easy: 'easy' is not an eval set of this recipe"):
        selected_sets(load_recipe(path))


def test_gate_on_a_set_left_out_and_gate_flag_without_gate_are_errors(sets_run, monkeypatch) -> None:
    path, recipe, _ = sets_run
    from eval.run import evaluate
    from tailor.errors import TailorError

    monkeypatch.setenv("EVAL_SETS", "hard")
    with pytest.raises(TailorError, match="eval.gate reads set 'test', which this run does not evaluate"):
        evaluate(recipe)
    monkeypatch.delenv("EVAL_SETS")
    with pytest.raises(TailorError, match="eval.gate.metric 'token_f1' is not one of eval.metrics"):
        evaluate(load_recipe(path, ["eval.gate.metric=token_f1"]))
    import argparse

    from eval.__main__ import stage

    with pytest.raises(TailorError, match="--gate needs eval.gate"):
        stage(load_recipe(path, ["eval.gate=null"]), argparse.Namespace(adapter=None, model=None, gate=True,
                                                                         compare_run=None, predictions=None))
