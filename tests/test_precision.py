"""Precision follows the device: measured on CPUs (forced AVX2 = no native bf16), compute capability on GPUs;
`make doctor` reports the machine and the choice."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tailor.errors import TailorError

REPO = Path(__file__).resolve().parents[1]
# What an AVX2-only CPU (e.g. an AMD EPYC without avx512_bf16) gives: oneDNN's bf16 matmul falls back to a slow path
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def run_tailor(args: list[str], cache: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAILOR_CACHE": str(cache), **extra_env}
    return subprocess.run([sys.executable, "-m", "tailor", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_doctor_on_a_forced_avx2_process_picks_fp32(tmp_path: Path) -> None:
    done = run_tailor(["doctor", "--json"], tmp_path, AVX2_ONLY)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["machine"]["cpu_isa"] == "AVX2"
    assert report["machine"]["kernel_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    choice = report["tailor_choices"]
    assert choice["precision"]["auto_picks"] == "fp32"
    assert choice["generation_dtype"] == "float32"
    assert "no native bf16" in choice["precision"]["reason"]
    peaks = report["matmul_gflops"]["cpu"]
    assert peaks["bfloat16"] < peaks["float32"]
    assert set(report["packages"]) >= {"torch", "transformers", "peft", "trl"}
    # the probe is cached per kernel environment
    assert len(list((tmp_path / "hardware").glob("cpu-matmul-*.json"))) == 1


def test_doctor_text_has_every_section(tmp_path: Path) -> None:
    done = run_tailor(["doctor", "recipes/hotel-demo.yaml", "--no-measure"], tmp_path, {})
    assert done.returncode == 0, done.stderr
    for section in ("[machine]", "[packages]", "[tailor_choices]", "cpu_isa", "precision", "optimizer", "attention"):
        assert section in done.stdout
    assert "[matmul_gflops]" not in done.stdout


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, fp32: float, bf16: float) -> None:
    import tailor.precision as precision

    monkeypatch.setattr(precision, "cpu_matmul_rates", lambda refresh=False: {"float32": fp32, "bfloat16": bf16})


def test_cpu_choice_follows_the_measured_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    from tailor.precision import device_precision

    _fake_cpu(monkeypatch, fp32=180.0, bf16=860.0)
    assert device_precision().name == "bf16"
    _fake_cpu(monkeypatch, fp32=125.0, bf16=0.9)
    slow = device_precision()
    assert slow.name == "fp32" and slow.slowdown == pytest.approx(138.9)


def test_forced_bf16_on_a_slow_cpu_warns_with_the_factor(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from tailor.precision import resolve_precision

    _fake_cpu(monkeypatch, fp32=125.0, bf16=0.9)
    with caplog.at_level(logging.WARNING, logger="tailor.precision"):
        chosen = resolve_precision("bf16")
    assert chosen.name == "bf16" and chosen.slowdown == pytest.approx(138.9)
    assert "138.9x slower" in caplog.text and "auto" in caplog.text
    caplog.clear()
    _fake_cpu(monkeypatch, fp32=180.0, bf16=860.0)
    with caplog.at_level(logging.WARNING, logger="tailor.precision"):
        assert resolve_precision("bf16").name == "bf16"
    assert caplog.text == ""


def test_fp16_on_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tailor.precision import resolve_precision

    _fake_cpu(monkeypatch, fp32=125.0, bf16=0.9)
    with pytest.raises(TailorError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16")
    assert resolve_precision("fp32").name == "fp32"


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"),
                                                       ((7, 0), "fp16"), ((5, 2), "fp32")])
def test_gpu_choice_follows_compute_capability(monkeypatch: pytest.MonkeyPatch, capability, expected) -> None:
    import torch

    from tailor.precision import device_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    chosen = device_precision()
    assert chosen.name == expected
    assert f"{capability[0]}.{capability[1]}" in chosen.reason


def test_sft_config_follows_the_precision(tmp_path: Path) -> None:
    from tailor.runs import RunPaths
    from tailor.schema import Recipe
    from train.config import trainer_config

    recipe = Recipe.model_validate({"name": "p", "model": {"name_or_path": "-"}, "data": {"sources": [{"path": "-"}]},
                                    "tracking": {"mode": "disabled"}})
    for name, bf16, fp16 in (("bf16", True, False), ("fp32", False, False)):
        args = trainer_config(recipe, RunPaths(tmp_path), use_cpu=True, precision=name, report_to=["none"])
        assert (args.bf16, args.fp16) == (bf16, fp16)
