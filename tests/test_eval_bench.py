"""`make bench-eval` at toy size: batched eval vs a per-row generate loop on the tiny Qwen2.5, recorded to a file."""

from __future__ import annotations

from pathlib import Path

from eval.bench import main


def test_bench_eval_tiny(tiny_qwen25: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Data preparation\n\n| date | rows |\n|---|---|\n| x | 1 |\n")
    args = ["--model", str(tiny_qwen25), "--rows", "4", "--batch-size", "4", "--max-new-tokens", "4",
            "--set", "data.sources.0.max_rows=120", "--benchmarks", str(target)]
    result = main(args)
    out = capsys.readouterr().out
    assert result["rows"] == 4 and result["loop_tokens"] > 0 and result["tailor_tokens"] > 0
    assert result["ratio"] > 0 and "ratio:" in out and "output mismatches under greedy" in out
    # greedy, same model and prompts: the batched answers are the per-row answers (or the mismatch is reported)
    shown = sum(1 for line in out.splitlines() if line.startswith("  row "))
    assert shown == min(len(result["mismatches"]), 3)
    text = target.read_text()
    assert text.startswith("# Benchmarks\n\n## Data preparation") and "| x | 1 |" in text
    assert "## Eval generation: batched vs per-row generate" in text
    assert text.rstrip().splitlines()[-1].startswith("| 20") and f"| {result['ratio']:.2f} |" in text
