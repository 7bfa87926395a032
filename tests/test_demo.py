"""The embedded default, end to end on the real SmolLM2-135M-Instruct (about 10 minutes on 2 cores), then SFT ->
GRPO from its adapter (about 6 more minutes): `make test-slow`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tailor.runs import read_json


def run_stages(recipe: str, output_dir: Path, *eval_args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    overrides = [f"output_dir={output_dir}", "tracking.mode=offline"]
    for module in ("data_prep", "train", "eval"):
        extra = list(eval_args) if module == "eval" else []
        result = subprocess.run([sys.executable, "-m", module, recipe, *overrides, *extra], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, f"{module}:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's run folders' parent, after `make demo`'s stages ran there."""
    out = tmp_path_factory.mktemp("demo")
    run_stages("recipes/hotel-demo.yaml", out)
    return out


@pytest.mark.slow
def test_demo_tuned_model_clearly_beats_base(demo: Path, tmp_path: Path) -> None:
    results = read_json(demo / "hotel-demo" / "eval" / "results.json")
    assert results["set"] == "test" and results["sets"]["test"]["rows"] == 98  # the fixed test file, folds 18-19
    base, tuned = results["models"]["base"], results["models"]["tuned"]
    assert tuned["loss"] < base["loss"] - 1.0
    assert tuned["json_valid"] >= 0.8 > base["json_valid"] + 0.5
    assert tuned["json_field_accuracy"] >= base["json_field_accuracy"] + 0.2
    # the retention guard ran offline on 30 GSM8K rows, and the gate promotes the adapter
    assert results["retention"]["sets"]["gsm8k"]["rows"] == 30
    assert results["gate"]["decision"] == "PROMOTE", results["gate"]["reason"]
    # the demo's report shows base vs tuned with intervals and plots, in a real browser, without errors
    from browser import open_page

    page = open_page(demo / "hotel-demo" / "eval" / "report.html", tmp_path / "demo-report.png",
                     ["table#metrics", "svg.plot", "svg.plot line.whisker"])
    assert page.console_errors == [] and page.page_errors == []
    assert page.counts["table#metrics"] == 1 and page.counts["svg.plot"] >= 9  # 3 metrics x (means, deltas, histogram)
    assert page.counts["svg.plot line.whisker"] >= 3
    assert "json_valid" in page.texts["table#metrics"] and "[+" in page.texts["table#metrics"]


@pytest.mark.slow
def test_sft_then_grpo_keeps_the_task_metric_of_the_sft_adapter(demo: Path) -> None:
    """recipes/hotel-grpo.yaml trains on from the demo's SFT adapter, rewarded by json_field_accuracy and json_valid;
    eval --compare-run gives the paired interval against the SFT adapter (README: Demo results)."""
    run_stages("recipes/hotel-grpo.yaml", demo, "--compare-run", str(demo / "hotel-demo"))
    metrics = read_json(demo / "hotel-grpo" / "adapter" / "train_metrics.json")
    assert metrics["method"] == "grpo" and metrics["init_adapter"]["run"] == "hotel-demo"
    assert {"rewards/json_field_accuracy/mean", "rewards/json_valid/mean", "reward_std"} <= set(metrics["curves"])
    results = read_json(demo / "hotel-grpo" / "eval" / "results.json")
    against_sft = results["pairs"]["hotel-demo"]["json_field_accuracy"]
    assert against_sft["n"] == 98 and against_sft["ci_high"] >= 0.0, against_sft  # not worse than SFT beyond doubt
    assert results["models"]["tuned"]["json_valid"] >= 0.9
