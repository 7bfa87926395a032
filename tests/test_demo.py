"""The embedded default, end to end on the real SmolLM2-135M-Instruct (about 10 minutes on 2 cores): `make test-slow`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tailor.runs import read_json


@pytest.mark.slow
def test_demo_tuned_model_clearly_beats_base(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    overrides = [f"output_dir={tmp_path}", "tracking.mode=offline"]
    for module in ("data_prep", "train", "eval"):
        result = subprocess.run([sys.executable, "-m", module, "recipes/hotel-demo.yaml", *overrides], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, f"{module}:\n{result.stderr[-4000:]}"
    results = read_json(tmp_path / "hotel-demo" / "eval" / "results.json")
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

    page = open_page(tmp_path / "hotel-demo" / "eval" / "report.html", tmp_path / "demo-report.png",
                     ["table#metrics", "svg.plot", "svg.plot line.whisker"])
    assert page.console_errors == [] and page.page_errors == []
    assert page.counts["table#metrics"] == 1 and page.counts["svg.plot"] >= 9  # 3 metrics x (means, deltas, histogram)
    assert page.counts["svg.plot line.whisker"] >= 3
    assert "json_valid" in page.texts["table#metrics"] and "[+" in page.texts["table#metrics"]
