"""`make bench-eval` at toy size: tailor's sorted batches vs transformers' unsorted batched generate vs a per-row
loop on the tiny Qwen2.5, recorded to a file (a new table under an older one with other columns)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.eval import SECTION, TABLE, main, record


@pytest.mark.slow  # ~16 s; `make bench-eval` runs the same code
def test_bench_eval_tiny(tiny_qwen25: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "BENCHMARKS.md"
    old_table = "| date | model | rows | batch | max new | tailor | loop | ratio | output mismatches |"
    target.write_text(f"# Benchmarks\n\n## Data preparation\n\n| date | rows |\n|---|---|\n| x | 1 |\n\n"
                      f"## {SECTION}\n\nintro\n\n{old_table}\n|---|---|---|---|---|---|---|---|---|\n"
                      "| 2026-11-22 | old | row |\n")
    args = ["--model", str(tiny_qwen25), "--rows", "5", "--batch-size", "2", "--max-new-tokens", "4",
            "--set", "data.sources.0.max_rows=120", "--benchmarks", str(target)]
    result = main(args)
    out = capsys.readouterr().out
    assert result["rows"] == 5 and min(result["loop_tokens"], result["batched_tokens"], result["tailor_tokens"]) > 0
    assert result["ratio_batched"] > 0 and result["ratio_loop"] > 0
    assert "ratio tailor/batched:" in out and "tailor/loop:" in out and "output mismatches under greedy" in out
    for label in ("tailor (sorted batches)", "transformers batched", "per-row loop"):
        assert any(line.startswith(label) and line.endswith("tok/s") for line in out.splitlines()), label
    # greedy, same model and prompts: the batched answers are the per-row answers (or the mismatch is reported)
    shown = sum(1 for line in out.splitlines() if line.startswith("  row "))
    assert shown == min(len(result["mismatches"]), 3)
    record(result, target)  # a second run adds a row to the new table
    lines = target.read_text().splitlines()
    assert lines[:3] == ["# Benchmarks", "", "## Data preparation"] and "| x | 1 |" in lines
    assert lines.count(TABLE[0]) == 1 and lines.index(TABLE[0]) > lines.index("| 2026-11-22 | old | row |")
    new_rows = lines[lines.index(TABLE[0]) + 2:]
    assert len(new_rows) == 2 and all(r.startswith("| 20") and r.count("|") == TABLE[1].count("|") for r in new_rows)
    assert f"| {result['ratio_batched']:.2f} | {result['ratio_loop']:.2f} |" in new_rows[0]
