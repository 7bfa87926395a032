"""Data stage at scale: chunked workers give the same data as one process, memory does not grow with the input,
and the streaming pieces (held-out contamination index, spilled near-dup sets) agree with the in-memory ones."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest


from conftest import REPO, chat_rows, write_jsonl
from data_prep import readers
from data_prep.contamination import HeldoutIndex, find_contaminated
from data_prep.near_dup import NearDupFilter
from data_prep.prepare import prepare
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def _recipe(tmp_path: Path, model: Path, name: str, data: dict, max_length: int = 128):
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(model)},
                                "data": data, "training": {"max_length": max_length},
                                "tracking": {"mode": "disabled"}}))
    return load_recipe(path)


def _tables(recipe) -> tuple[list[dict], list[dict]]:
    import pyarrow.parquet as pq

    paths = run_paths(recipe)
    return pq.read_table(paths.train_data).to_pylist(), pq.read_table(paths.heldout_data).to_pylist()


def test_two_processes_and_small_chunks_give_the_same_data(tmp_path: Path, tiny_qwen25: Path, monkeypatch) -> None:
    rows = chat_rows(240)
    rows[5]["messages"][0]["content"] += " mail me at a.b@example.com"
    rows[100:110] = [json.loads(json.dumps(r)) for r in rows[10:20]]  # exact duplicates, in later chunks
    lines = [json.dumps(r) for r in rows]
    lines.insert(30, "{broken")
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"policy {i}: late checkout at {i % 12} pm"} for i in range(60)])
    settings = {"sources": [{"path": str(data), "max_rows": 200}, {"path": str(text), "format": "text", "weight": 1.5}],
                "heldout_fraction": 0.2, "max_bad_fraction": 0.5, "clean": {"min_tokens": 12}}
    one = _recipe(tmp_path, tiny_qwen25, "one", settings)
    first = prepare(one)
    monkeypatch.setattr(readers, "CHUNK_BYTES", (1500, 1500))  # ~25 chunks, each its own shard
    two = _recipe(tmp_path, tiny_qwen25, "two", {**settings, "num_proc": 2})
    second = prepare(two)
    assert _tables(one) == _tables(two)
    train, heldout = _tables(two)
    assert len(train) > 150 and len(heldout) > 20
    assert [r["_score"] if "_score" in r else None for r in train] == [None] * len(train)  # working columns dropped
    for key in ("rows", "tokens", "pii", "contamination", "audit"):
        assert first[key] == second[key], key
    assert second["rows"]["read"] == 201 + 60  # max_rows counts kept rows: the bad line is read on the way
    assert second["rows"]["rejected_by_reason"]["exact duplicate"] == 10 and second["pii"] == {"EMAIL": 1}
    assert second["rows"]["rejected_by_reason"]["too short"] > 0


def test_heldout_index_agrees_with_find_contaminated() -> None:
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(300)]
    train = [(f"t{i}", " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 40)))) for i in range(400)]
    heldout = []
    for i in range(120):
        words = rng.choice(train)[1].split() if i % 2 else [rng.choice(vocab) for _ in range(20)]
        words[rng.randrange(len(words)):] = [rng.choice(vocab) for _ in range(rng.randint(0, 10))]
        heldout.append((f"h{i}", " ".join(words)))
    heldout.append(("empty", ""))
    expected = find_contaminated(train, heldout, n=3, threshold=0.4)
    assert 10 < len(expected) < 110
    index = HeldoutIndex(heldout, n=3)
    for start in range(0, len(train), 64):
        index.scan([text for _, text in train[start:start + 64]])
    flagged = index.contaminated(0.4)
    index.start_best(flagged)
    for start in range(0, len(train), 64):
        batch = train[start:start + 64]
        index.scan_best([key for key, _ in batch], [text for _, text in batch])
    assert index.results(flagged) == expected


def test_spilled_near_dup_sets_give_the_same_results(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = []
    for i in range(3000):
        if rows and rng.random() < 0.3:
            words = rng.choice(rows)[1].split()
            words[rng.randrange(len(words))] = f"w{rng.randrange(500)}"
        else:
            words = [f"w{rng.randrange(500)}" for _ in range(rng.randint(4, 30))]
        rows.append((f"r{i}", " ".join(words)))
    in_memory = NearDupFilter(threshold=0.8).add_many(rows, batch_size=700)
    spilled = NearDupFilter(threshold=0.8, spill_dir=tmp_path).add_many(rows, batch_size=700)
    assert spilled == in_memory and sum(r is not None for r in spilled) > 100


PEAK_RSS = """
import json, os, resource, sys
sys.path.insert(0, {repo!r})
from data_prep import readers
from data_prep.prepare import prepare
from tailor.recipe import load_recipe
readers.CHUNK_BYTES = (1 << 20, 1 << 20)  # fixed-size chunks: their count grows with the input
manifest = prepare(load_recipe(sys.argv[1]), force=True)
print(json.dumps({{"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "train": manifest["rows"]["train"]}}))
"""


def _long_rows(path: Path, rows: int, seed: int, vocab: list[str]) -> int:
    """Chats with a ~8 kB answer of random whole-word tokens (no near duplicates); returns the file size."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            answer = " ".join(rng.choice(vocab) for _ in range(1000))
            handle.write(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                  {"role": "assistant", "content": answer}]}) + "\n")
    return path.stat().st_size


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_input(tmp_path: Path, tiny_qwen25: Path) -> None:
    """Prepare 600 and 4800 rows of ~8 kB in fresh processes: the extra ~35 MB of input (several times that as
    Python rows and token lists, ~250 MB, which the stage used to hold) must add less than three quarters of
    its size to the peak memory (measured: about a third): only hashes, scores and signatures are kept per row,
    and chunks, shard row groups and blocks are bounded."""
    from transformers import AutoTokenizer

    vocab = [w[1:] for w in AutoTokenizer.from_pretrained(tiny_qwen25).get_vocab()
             if w.startswith("\u0120") and w[1:].isalpha() and w[1:].islower() and len(w) > 6][:5000]
    script = tmp_path / "peak.py"
    script.write_text(PEAK_RSS.format(repo=str(REPO)))
    peaks, sizes = [], []
    for rows in (600, 4800):
        data = tmp_path / f"long-{rows}.jsonl"
        sizes.append(_long_rows(data, rows, rows, vocab))
        recipe = tmp_path / f"mem-{rows}.yaml"
        recipe.write_text(json.dumps({
            "name": f"mem-{rows}", "output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(tiny_qwen25)},
            "data": {"sources": [{"path": str(data)}], "max_heldout_rows": 40},
            "training": {"max_length": 2048}, "tracking": {"mode": "disabled"}}))
        done = subprocess.run([sys.executable, str(script), str(recipe)], capture_output=True, text=True, cwd=REPO,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["train"] > 0.8 * rows
        peaks.append(result["peak_kb"] * 1024)
    growth, extra_input = peaks[1] - peaks[0], sizes[1] - sizes[0]
    assert extra_input > 30 * 2**20
    assert growth < 0.75 * extra_input, (f"peak memory grew by {growth / 2**20:.1f} MB for "
                                        f"{extra_input / 2**20:.1f} MB more input")
