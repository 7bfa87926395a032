"""`python -m tailor.compare`: real pipeline runs differing in one recipe key, the HTML report in Chromium, and
corrupt or half-written run folders listed as such."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tailor.compare import compare, find_runs, load_run, main, recipe_diff, sort_runs
from test_lineage import pipeline, two_runs  # noqa: F401 - the shared pipeline fixtures

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def fake_run(root: Path, name: str, lr: float = 2e-4, exact: float = 0.5, tags: list[str] | None = None) -> Path:
    """A run folder as the stages write it (run.json with recipe, eval results, train metrics), no model."""
    run = root / name
    recipe = {"name": name, "training": {"lr": lr, "logging_steps": 1}, "eval": {"metrics": ["exact_match"]},
              "tracking": {"tags": tags or [], "gpu_hour_price": 2.0}}
    stages = {"train": {"train_loss": 1.0, "tokens_per_second": 100.0,
                        "usage": {"seconds": 3600.0, "device": "gpu", "devices": 2, "device_hours": 2.0}},
              "eval": {"usage": {"seconds": 36.0, "device": "gpu", "devices": 1, "device_hours": 0.01,
                                 "predictions": 100, "tuned_seconds": 18.0}}}
    (run / "adapter").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "run.json").write_text(json.dumps({"stages": stages, "recipe": recipe, "recipe_hash": "ab" * 32}))
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "train_metrics.json").write_text(json.dumps({"loss_history": [2.0, 1.5, 1.0]}))
    comparison = {"delta": exact - 0.1, "ci_low": exact - 0.2, "ci_high": exact, "excludes_zero": True}
    (run / "eval" / "results.json").write_text(json.dumps({
        "models": {"base": {"loss": 2.0, "exact_match": 0.1}, "tuned": {"loss": 1.0, "exact_match": exact}},
        "comparisons": {"exact_match": comparison}}))
    return run


def test_recipe_diff_totals_and_sorting(tmp_path: Path) -> None:
    fake_run(tmp_path, "a", lr=1e-4, exact=0.3)
    fake_run(tmp_path, "b", lr=2e-4, exact=0.6)
    runs = [load_run(p) for p in find_runs([str(tmp_path)])]
    assert [r.status for r in runs] == ["ok", "ok"], [r.problems for r in runs]
    assert recipe_diff(runs) == ["training.lr"]
    # cost: 2.01 device-hours x 2.0 per GPU-hour; per 1k predictions: 18 s x 1 GPU x 2.0 / 3600 / 100 x 1000
    assert runs[0].totals["gpu_hours"] == pytest.approx(2.01) and runs[0].totals["cost"] == pytest.approx(4.02)
    assert runs[0].totals["cost_per_1k_predictions"] == pytest.approx(0.1)
    assert [r.name for r in sort_runs(runs, "exact_match")] == ["b", "a"]
    assert [r.name for r in sort_runs(runs, "loss")] == ["a", "b"]  # ties keep order; lower is better


def test_every_eval_set_retention_and_gate_get_columns(tmp_path: Path, capsys) -> None:
    """Per-set columns `<set>/<metric>` (the default set keeps plain names), retention losses, the gate."""
    for name, hard, promote in (("a", 0.2, False), ("b", 0.4, True)):
        run = fake_run(tmp_path, name)
        results = json.loads((run / "eval" / "results.json").read_text())
        interval = {"delta": hard - 0.1, "ci_low": hard - 0.15, "ci_high": hard - 0.05, "excludes_zero": True}
        results.update(set="test", sets={
            "test": {"models": results["models"], "comparisons": results["comparisons"]},
            "hard": {"models": {"base": {"exact_match": 0.1}, "tuned": {"exact_match": hard}},
                     "comparisons": {"exact_match": interval}}},
            retention={"sets": {"gsm8k": {"base_loss": 1.0, "tuned_loss": 1.0 + hard, "delta": hard,
                                          "ci_low": hard - 0.1, "ci_high": hard + 0.1}}},
            gate={"promote": promote, "decision": "PROMOTE" if promote else "HOLD"})
        (run / "eval" / "results.json").write_text(json.dumps(results))
    runs = [load_run(p) for p in find_runs([str(tmp_path)])]
    assert runs[1].tuned["hard/exact_match"] == 0.4 and runs[1].comparisons["hard/exact_match"]["ci_low"] == 0.25
    assert [r.name for r in sort_runs(runs, "hard/exact_match")] == ["b", "a"]
    assert [r.name for r in sort_runs(runs, "retention/gsm8k")] == ["a", "b"]  # a lower loss retains more
    main([str(tmp_path)])
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert {"exact_match", "hard/exact_match", "retention/gsm8k", "gate"} <= set(header)
    assert "0.400 (+0.300 [+0.250, +0.350]*)" in out and "HOLD" in out and "PROMOTE" in out


def test_cli_filters_globs_best_and_html(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path, "lr-small", lr=1e-4, exact=0.3, tags=["sweep"])
    fake_run(tmp_path, "lr-big", lr=3e-4, exact=0.6, tags=["sweep"])
    fake_run(tmp_path, "other", exact=0.9)
    html = tmp_path / "out" / "compare.html"
    main([str(tmp_path / "lr-*"), "--best", "exact_match", "--html", str(html)])
    out = capsys.readouterr().out
    assert "best by exact_match (highest): lr-big = 0.6" in out
    assert "other" not in out and out.index("lr-big") < out.index("lr-small")
    assert "training.lr" in out and "0.600 (+0.500 [+0.400, +0.600]*)" in out
    assert html.is_file() and "<script" not in html.read_text()
    runs, keys, _ = compare([str(tmp_path)], tag="sweep")
    assert {r.name for r in runs} == {"lr-small", "lr-big"} and keys == ["training.lr"]
    runs, _, _ = compare([str(tmp_path)], recipe="oth*")
    assert [r.name for r in runs] == ["other"]


def test_corrupt_and_half_written_run_folders_are_listed_not_fatal(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path, "good")
    (fake_run(tmp_path, "bad-json") / "run.json").write_text('{"stages": {"train": ')
    half = fake_run(tmp_path, "half")
    (half / ".run.json.x1y2.tmp").write_text("{")
    shutil.rmtree(half / "adapter")
    (fake_run(tmp_path, "bad-results") / "eval" / "results.json").write_bytes(b"\xff\xfe not json")
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "data").mkdir()
    main([str(tmp_path), "--no-html"])
    out = capsys.readouterr().out
    status = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line.split()[:1] and
              line.split()[0] in {"good", "bad-json", "half", "bad-results", "empty-run"}}
    assert status == {"good": "ok", "bad-json": "corrupt", "half": "partial", "bad-results": "corrupt",
                      "empty-run": "partial"}
    assert "CORRUPT" in out and "run.json is not valid JSON" in out
    assert "leftover temporary .run.json.x1y2.tmp" in out and "adapter/adapter_config.json is missing" in out


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tailor.compare", str(tmp_path / "nope")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_two_real_runs_differ_in_exactly_one_key_and_report_renders(two_runs, tmp_path: Path) -> None:  # noqa: F811
    """Acceptance: `make compare` over two pipeline runs that differ in training.lr shows exactly that key."""
    from browser import open_page

    run_a, run_b = two_runs
    html = tmp_path / "compare.html"
    result = subprocess.run([sys.executable, "-m", "tailor.compare", str(run_a), str(run_b), "--html", str(html)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs, keys, _ = compare([str(run_a), str(run_b)])
    assert keys == ["training.lr"], keys
    assert [r.status for r in runs] == ["ok", "ok"], [r.problems for r in runs]
    header = result.stdout.splitlines()[0].split()
    assert "training.lr" in header and not [h for h in header if h.startswith(("training.", "data.", "peft."))
                                            and h != "training.lr"]
    assert all(r.loss_curve for r in runs) and runs[0].totals["tokens_per_second"] > 0
    check = open_page(html, tmp_path / "compare.png", ["svg.loss-curves path.curve", "#recipe-diff td code",
                                                       "svg.metric-bars", "#lineage tr"])
    assert not check.console_errors and not check.page_errors
    assert check.counts["svg.loss-curves path.curve"] == 2
    assert check.texts["#recipe-diff td code"] == "training.lr"
    assert check.counts["svg.metric-bars"] >= 1 and check.counts["#lineage tr"] == 3
    assert (tmp_path / "compare.png").stat().st_size > 10_000
