"""Data stage: readers, format mapping, split stability, chat-template masks, manifest, quarantine, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import chat_rows, write_jsonl
from data_prep.formats import to_messages
from tailor.render import RowError
from data_prep.prepare import prepare
from data_prep.readers import BadRow, RawRow, read_rows
from tailor.render import render_example
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths
from tailor.schema import DataSource


def test_jsonl_reader_reports_bad_lines_with_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n{broken\n\n[1, 2]\n{"b": "\xc3\xa9"}\n' + b'\xff\xfe bad utf8\n')
    rows = list(read_rows(path))
    assert [type(r).__name__ for r in rows] == ["RawRow", "BadRow", "BadRow", "RawRow", "BadRow"]
    assert rows[3].value == {"b": "\u00e9"}
    assert rows[1].line == 2 and "malformed JSON" in rows[1].reason
    assert rows[2].line == 4 and "expected a JSON object" in rows[2].reason
    assert rows[4].line == 6 and "not UTF-8" in rows[4].reason


def test_csv_and_parquet_readers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,completion\n"hi, there",hello\n"multi\nline",ok\nonly-one-column\n', encoding="utf-8")
    rows = list(read_rows(csv_path))
    assert isinstance(rows[0], RawRow) and rows[0].value == {"prompt": "hi, there", "completion": "hello"}
    assert rows[1].value["prompt"] == "multi\nline"
    assert isinstance(rows[2], BadRow) and "columns" in rows[2].reason
    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"], "output": ["x", "y"]}), parquet_path)
    values = [r.value for r in read_rows(parquet_path)]
    assert values == [{"instruction": "a", "output": "x"}, {"instruction": "b", "output": "y"}]


def test_unknown_suffix_needs_file_type(tmp_path: Path) -> None:
    with pytest.raises(TailorError, match="file_type"):
        list(read_rows(tmp_path / "data.txt"))


@pytest.mark.parametrize("fmt,row,fields,expected_user", [
    ("alpaca", {"instruction": "Translate", "input": "chat", "output": "cat"}, {}, "Translate\n\nchat"),
    ("alpaca", {"instruction": "Say hi", "output": "hi"}, {}, "Say hi"),
    ("alpaca", {"q": "Say hi", "a": "hi"}, {"instruction": "q", "output": "a"}, "Say hi"),
    ("prompt_completion", {"prompt": "2+2?", "completion": "4"}, {}, "2+2?"),
    ("prompt_completion", {"question": "2+2?", "answer": "4"}, {"prompt": "question", "completion": "answer"}, "2+2?"),
])
def test_formats_map_to_messages(fmt: str, row: dict, fields: dict, expected_user: str) -> None:
    source = DataSource(path="x.jsonl", format=fmt, fields=fields)
    messages = to_messages(row, source, system_prompt="Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {"role": "user", "content": expected_user}
    assert messages[2]["role"] == "assistant" and messages[2]["content"] in {"cat", "hi", "4"}


def test_messages_format_keeps_own_system_and_custom_column() -> None:
    source = DataSource(path="x.jsonl", fields={"messages": "conversation"})
    row = {"conversation": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                            {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"},
                            {"role": "assistant", "content": "A2"}]}
    assert to_messages(row, source, system_prompt="ignored") == row["conversation"]


@pytest.mark.parametrize("row,reason", [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "must end with an assistant"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "empty"),
    ({"other": 1}, "missing"),
])
def test_bad_message_rows_are_refused_with_reason(row: dict, reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        to_messages(row, DataSource(path="x.jsonl"), None)


def test_assistant_only_mask_on_real_qwen_template(tiny_qwen25: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "second"},
                {"role": "assistant", "content": "second answer"}]
    rendered = render_example(tokenizer, messages, max_length=512)
    trained = [t for t, m in zip(rendered.input_ids, rendered.assistant_masks) if m]
    text = tokenizer.decode(trained)
    assert text == "first answer<|im_end|>\nsecond answer<|im_end|>\n"
    assert trained.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2
    untrained = tokenizer.decode([t for t, m in zip(rendered.input_ids, rendered.assistant_masks) if not m])
    assert "first question" in untrained and "<|im_start|>assistant\n" in untrained and "answer" not in untrained
    first = rendered.assistant_masks.index(1)
    truncated = render_example(tokenizer, messages, max_length=first + 2)
    assert len(truncated.input_ids) == first + 2 and truncated.truncated and truncated.num_trained == 2
    with pytest.raises(RowError, match="no trainable token within"):
        render_example(tokenizer, messages, max_length=first)


def test_prepare_writes_split_manifest_and_quarantine(tiny_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(tiny_recipe(rows=40), ["data.max_bad_fraction=0.1"])
    data_file = Path(recipe.data.sources[0].path)
    with data_file.open("a", encoding="utf-8") as handle:
        handle.write('{"messages": [oops\n')
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    rows = manifest["rows"]
    assert rows["read"] == 41 and rows["bad"] == 1 and rows["train"] + rows["heldout"] == 40
    assert 4 <= rows["heldout"] <= 18
    assert manifest["inputs"][str(data_file)] and manifest["recipe_hash"] and manifest["tokens"]["train_trained"] > 0
    rejected = [json.loads(line) for line in paths.rejected.read_text().splitlines()]
    assert rejected == [{"where": f"{data_file}:41", "line": 41, "kind": "bad",
                         "reason": "malformed JSON: Expecting value (column 15)", "raw": '{"messages": [oops\n'}]


def test_too_many_bad_rows_fail_and_name_the_file(tiny_recipe) -> None:
    recipe = load_recipe(tiny_recipe(rows=10))
    with Path(recipe.data.sources[0].path).open("a", encoding="utf-8") as handle:
        handle.write("not json\n")
    with pytest.raises(TailorError, match=r"1 of 11 rows \(9.1%\) are bad.*rejected.jsonl"):
        prepare(recipe)
    paths = run_paths(recipe)
    assert not paths.manifest.exists() and "not json" in paths.rejected.read_text()


def test_split_is_stable_when_rows_are_appended(tiny_recipe) -> None:
    recipe = load_recipe(tiny_recipe(rows=60))
    data_file = Path(recipe.data.sources[0].path)
    heldout_before = _heldout_ids(prepare(recipe), recipe)
    write_jsonl(data_file, chat_rows(60) + chat_rows(40, offset=1000))
    heldout_after = _heldout_ids(prepare(recipe), recipe)
    assert heldout_before and heldout_before <= heldout_after
    assert len(heldout_after) > len(heldout_before)


def _heldout_ids(manifest: dict, recipe) -> set[str]:
    from datasets import load_dataset

    return set(load_dataset("parquet", data_files=str(run_paths(recipe).heldout_data), split="train")["id"])


def test_second_prepare_is_cached_and_data_change_invalidates(tiny_recipe) -> None:
    recipe = load_recipe(tiny_recipe(rows=20))
    paths = run_paths(recipe)
    first = prepare(recipe)
    stamp = paths.train_data.stat().st_mtime_ns
    again = prepare(recipe)
    assert again.pop("cached") is True and again == first and paths.train_data.stat().st_mtime_ns == stamp
    write_jsonl(Path(recipe.data.sources[0].path), chat_rows(21))
    assert prepare(recipe)["rows"]["read"] == 21
    changed = load_recipe(tiny_recipe(rows=21), ["data.system_prompt=Be brief."])
    assert prepare(changed)["data_hash"] != first["data_hash"]
