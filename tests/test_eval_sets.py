"""Named evaluation sets (data.eval_sets): prepared like training rows, never split, never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import chat_rows, write, write_jsonl
from data_prep.prepare import prepare
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def csv_rows(n: int, offset: int = 1000) -> list[tuple[str, str]]:
    return [(f"Which number comes after {i}? Answer as JSON.", json.dumps({"number": i + 1}))
            for i in range(offset, offset + n)]


def sets_recipe(tmp_path: Path, model: Path, train: list[dict], test: list[tuple[str, str]] | None = None,
                hard: list[dict] | None = None, extra: str = "", heldout: str = "0.2") -> Path:
    """A recipe with training rows, a CSV set `test` and a JSONL set `hard` (each only when given)."""
    data = write_jsonl(tmp_path / "data" / "train.jsonl", train)
    sets = []
    if test is not None:
        write_csv(tmp_path / "data" / "test.csv", test)
        sets.append("    test: [{path: data/test.csv, format: prompt_completion, fields: {prompt: text, "
                    "completion: label}}]")
    if hard is not None:
        write_jsonl(tmp_path / "data" / "hard.jsonl", hard)
        sets.append("    hard: [{path: data/hard.jsonl, format: messages}]")
    eval_sets = ("  eval_sets:\n" + "\n".join(sets) + "\n") if sets else ""
    text = (f"name: sets\noutput_dir: {tmp_path / 'runs'}\nmodel: {{name_or_path: {model}, dtype: float32}}\n"
            f"data:\n  sources: [{{path: {data}}}]\n  heldout_fraction: {heldout}\n{eval_sets}"
            "training: {max_steps: 2, batch_size: 4, max_length: 64, mixed_precision: fp32}\n"
            "eval: {metrics: [exact_match, json_valid], max_new_tokens: 8, batch_size: 8}\n"
            f"tracking: {{mode: disabled}}\n{extra}")
    return write(tmp_path / "recipe.yaml", text)


def test_two_named_sets_and_the_hash_split_are_prepared(tmp_path: Path, tiny_qwen25: Path) -> None:
    hard = chat_rows(6, offset=500)
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, chat_rows(40), csv_rows(7), hard))
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    assert list(manifest["eval_sets"]) == ["heldout", "test", "hard"]
    assert manifest["eval_sets"]["heldout"]["file"] == "heldout.parquet"
    assert manifest["rows"]["eval_sets"]["test"] == 7 and manifest["rows"]["eval_sets"]["hard"] == 6
    assert manifest["rows"]["train"] + manifest["rows"]["heldout"] == 40
    for name, count in (("test", 7), ("hard", 6)):
        table = pq.read_table(paths.eval_set_data(name)).to_pylist()
        assert len(table) == count and all(row["prompt"] and row["reference"] for row in table)
    test_rows = pq.read_table(paths.eval_set_data("test")).to_pylist()
    # rendered with the same chat template as training rows
    assert all("<|im_start|>user" in row["prompt"] for row in test_rows)
    assert {json.loads(r["reference"])["number"] for r in test_rows} == set(range(1001, 1008))
    card = (paths.data_dir / "data_card.md").read_text()
    assert "## Evaluation sets" in card and "eval set test" in card and "data/test.csv" in card
    # the hash split's file is still where existing readers look
    assert paths.heldout_data.is_file() and len(pq.read_table(paths.heldout_data)) == manifest["rows"]["heldout"]


def test_training_row_copied_into_a_set_is_removed_from_training_not_the_set(tmp_path: Path,
                                                                             tiny_qwen25: Path) -> None:
    train = chat_rows(30)
    hard = [train[3], train[11]] + chat_rows(4, offset=700)
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, train, hard=hard, heldout="0"))
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    assert manifest["rows"]["train"] == 28 and manifest["rows"]["eval_sets"] == {"hard": 6}
    assert list(manifest["eval_sets"]) == ["hard"] and manifest["rows"]["heldout"] == 0
    assert manifest["contamination"]["eval_sets"] == {"hard": 2}
    assert manifest["eval_sets"]["hard"]["removed_from_train"] == 2
    trained = {row["source"] for row in pq.read_table(paths.train_data).to_pylist()}
    assert not any(s.endswith(":4") or s.endswith(":12") for s in trained)
    rejected = [json.loads(line) for line in paths.rejected.read_text().splitlines()]
    removed = [r for r in rejected if r["kind"] == "contaminated"]
    assert sorted(r["line"] for r in removed) == [4, 12]
    assert all(r["reason"] == "training row overlaps eval set hard" and r["overlap"] == 1.0 for r in removed)
    assert {r["eval_row"].rsplit(":", 1)[1] for r in removed} == {"1", "2"}
    assert "hard.jsonl" in removed[0]["eval_row"]


def test_set_that_is_all_training_data_warns(tmp_path: Path, tiny_qwen25: Path) -> None:
    train = chat_rows(30)
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, train, hard=train[:5], heldout="0"))
    manifest = prepare(recipe)
    assert manifest["rows"]["train"] == 25
    assert len(manifest["warnings"]) == 1 and "'hard'" in manifest["warnings"][0]
    assert "every one of its 5 rows" in manifest["warnings"][0] and "hard.jsonl" in manifest["warnings"][0]


def test_set_overlapping_every_training_row_is_an_error(tmp_path: Path, tiny_qwen25: Path) -> None:
    train = chat_rows(10)
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, train, hard=train, heldout="0"))
    with pytest.raises(TailorError, match="no training row is left"):
        prepare(recipe)
    rejected = run_paths(recipe).rejected.read_text()
    assert rejected.count("training row overlaps eval set hard") == 10


def test_set_whose_rows_all_fail_names_the_set_file_and_line(tmp_path: Path, tiny_qwen25: Path) -> None:
    bad = [{"messages": [{"role": "wizard", "content": "hi"}]}, {"messages": "not a list"}]
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, chat_rows(20), hard=bad,
                                     extra="", heldout="0.2"))
    with pytest.raises(TailorError) as err:
        prepare(recipe)
    message = str(err.value)
    assert "data.eval_sets.hard" in message and "hard.jsonl" in message and "2 of 2 rows" in message
    rejected = [json.loads(line) for line in run_paths(recipe).rejected.read_text().splitlines()]
    wheres = {r["where"] for r in rejected if r["kind"] == "bad"}
    assert {w.rsplit(":", 1)[1] for w in wheres if "hard.jsonl" in w} == {"1", "2"}
    assert not run_paths(recipe).manifest.exists()


def test_empty_set_file_is_an_error(tmp_path: Path, tiny_qwen25: Path) -> None:
    recipe = load_recipe(sets_recipe(tmp_path, tiny_qwen25, chat_rows(20), hard=[]))
    with pytest.raises(TailorError, match=r"data.eval_sets.hard: eval set 'hard' \(.*hard.jsonl\) has no row"):
        prepare(recipe)


def test_bad_set_definitions_in_the_recipe(tmp_path: Path, tiny_qwen25: Path) -> None:
    path = sets_recipe(tmp_path, tiny_qwen25, chat_rows(4), csv_rows(2), chat_rows(2, offset=50))
    text = path.read_text()
    twice = text.replace("    hard: [", "    test: [")
    write(path, twice)
    with pytest.raises(TailorError) as err:
        load_recipe(path)
    line = twice.splitlines().index(next(ln for ln in twice.splitlines() if ln.startswith("    test:") and "jsonl" in ln)) + 1
    assert f"{path}:{line}: data.eval_sets.test: key given twice" in str(err.value) and "first at line" in str(err.value)
    write(path, text.replace("    hard: [{path: data/hard.jsonl, format: messages}]", "    hard: []"))
    with pytest.raises(TailorError, match="eval set 'hard' lists no source"):
        load_recipe(path)
    write(path, text.replace("    hard: [", "    heldout: ["))
    with pytest.raises(TailorError, match="reserved for the hash split"):
        load_recipe(path)
    write(path, text)
    with pytest.raises(TailorError, match="nothing to evaluate"):
        load_recipe(path, ["data.eval_sets={}", "data.heldout_fraction=0"])
    with pytest.raises(TailorError, match="eval.sets names 'easy'"):
        load_recipe(path, ["eval.sets=[easy]"])
    recipe = load_recipe(path, ["data.heldout_fraction=null"])
    assert recipe.data.set_names() == ["test", "hard"]
    assert load_recipe(path).data.set_names() == ["heldout", "test", "hard"]
    # paths inside eval sets are relative to the recipe file, like sources
    assert Path(load_recipe(path).data.eval_sets["test"][0].path).resolve() == (tmp_path / "data" / "test.csv")
