"""Preference data through the data stage: formats, pair rendering, the columns of dpo / kto / grpo, quarantine,
dedup of pairs, the data card; SFT output and hash unchanged (tests/test_data_prep.py covers SFT itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import chat_rows, write_jsonl, write_tiny_recipe
from data_prep.formats import Preference, to_preference
from data_prep.prepare import prepare
from tailor.contract import data_hash
from tailor.recipe import load_recipe
from tailor.render import Renderer, RowError
from tailor.runs import run_paths
from tailor.schema import DataSource

PAIR = DataSource(path="x.jsonl", format="preference")
UNPAIRED = DataSource(path="x.jsonl", format="unpaired_preference")
USER, ANSWER = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}


@pytest.mark.parametrize("row,expected", [
    ({"prompt": "Q", "chosen": "A", "rejected": "B"},
     Preference([{"role": "system", "content": "S"}, USER], [ANSWER], [{"role": "assistant", "content": "B"}])),
    ({"messages": [{"role": "system", "content": "own"}, USER], "chosen": [ANSWER], "rejected": "B"},
     Preference([{"role": "system", "content": "own"}, USER], [ANSWER], [{"role": "assistant", "content": "B"}])),
    ({"prompt": [USER], "chosen": "A", "rejected": [{"role": "assistant", "content": "B"}]},
     Preference([{"role": "system", "content": "S"}, USER], [ANSWER], [{"role": "assistant", "content": "B"}])),
])
def test_preference_rows_map_to_prompt_and_sides(row: dict, expected: Preference) -> None:
    assert to_preference(row, PAIR, "S") == expected
    assert expected.conversation == expected.prompt + [ANSWER]


@pytest.mark.parametrize("label,expected", [(True, True), ("false", False), ("TRUE", True), ("1", True), ("0", False),
                                            (0, False)])
def test_unpaired_labels_accept_booleans_and_csv_strings(label: object, expected: bool) -> None:
    row = to_preference({"prompt": "Q", "completion": "A", "label": label}, UNPAIRED, None)
    assert row == Preference([USER], [ANSWER], None, expected)


@pytest.mark.parametrize("source,row,reason", [
    (PAIR, {"prompt": "Q", "chosen": "", "rejected": "B"}, "chosen is empty"),
    (PAIR, {"prompt": "Q", "chosen": "A", "rejected": []}, "rejected is empty"),
    (PAIR, {"prompt": "Q", "chosen": "A"}, "rejected is missing"),
    (PAIR, {"prompt": "Q", "chosen": " A", "rejected": "A "}, "chosen and rejected are identical: the pair teaches "
                                                              "nothing"),
    (PAIR, {"messages": [{"role": "system", "content": "S"}], "chosen": "A", "rejected": "B"}, "no user message"),
    (PAIR, {"chosen": "A", "rejected": "B"}, "the prompt is missing"),
    (PAIR, {"messages": [USER, ANSWER], "chosen": "A2", "rejected": "B"}, "ends with an assistant message"),
    (PAIR, {"prompt": "Q", "chosen": [USER], "rejected": "B"}, "chosen must end with an assistant message"),
    (UNPAIRED, {"prompt": "Q", "completion": "A", "label": "maybe"}, "'label' must be true or false"),
    (UNPAIRED, {"prompt": "Q", "completion": "A", "label": 2}, "'label' must be true or false"),
    (UNPAIRED, {"prompt": "Q", "completion": "A"}, "'label' is missing"),
])
def test_bad_preference_rows_are_refused_with_reason(source: DataSource, row: dict, reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        to_preference(row, source, None)


def _pairs(n: int, start: int = 0) -> list[dict]:
    """Pairs whose chosen side (JSON) is longer than the rejected one for even i, shorter for odd i."""
    return [{"prompt": f"Give item {i} as JSON.",
             "chosen": json.dumps({"item": i}) if i % 2 == 0 else f"{{\"item\":{i}}}",
             "rejected": f"item {i}" if i % 2 == 0 else f"the item you asked for is number {i}, as plain words"}
            for i in range(start, start + n)]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def _read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _rejected(recipe) -> dict[str, dict]:
    return {r["where"]: r for r in map(json.loads, run_paths(recipe).rejected.read_text().splitlines())}


def test_dpo_pairs_from_jsonl_csv_and_parquet(tmp_path: Path, tiny_qwen25: Path, capsys) -> None:
    from transformers import AutoTokenizer

    long = " ".join(f"word{i}" for i in range(60))
    rows = _pairs(16) + [
        _pairs(1)[0],  # 17: exact duplicate of line 1
        {**_pairs(1)[0], "rejected": "something else"},  # 18: same prompt and chosen, another rejected: kept
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "Write to a@example.com"}],
         "chosen": [{"role": "assistant", "content": "Done, wrote to a@example.com"}], "rejected": "No."},  # 19
        {"prompt": "Q", "chosen": "", "rejected": "B"},  # 20: empty side
        {"prompt": "Q", "chosen": "Same", "rejected": "Same"},  # 21: identical sides
        {"prompt": "Tell me", "chosen": "Sure",
         "rejected": [{"role": "user", "content": "And more?"}, {"role": "assistant", "content": "No"}]},  # 22
        {"prompt": "Answer", "chosen": "\nYes", "rejected": "No"},  # 23: '\n\n' merges across the prompt end
        {"prompt": long, "chosen": "A", "rejected": "B"},  # 24: the prompt alone fills max_length
        {"prompt": "Count", "chosen": long.replace("word", "n"), "rejected": "one two"},  # 25: chosen cut to fit
    ]
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", rows)
    csv = _write_csv(tmp_path / "pairs.csv", ["question", "good", "bad"],
                     [[r["prompt"], r["chosen"], r["rejected"]] for r in _pairs(6, 100)])
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": f"Say {i}"}] for i in range(6)],
                             "chosen": [[{"role": "assistant", "content": f"{i}"}] for i in range(6)],
                             "rejected": [[{"role": "assistant", "content": f"I will not say {i}"}]
                                          for i in range(6)]}), parquet)
    sources = [{"path": str(jsonl), "format": "preference"},
               {"path": str(csv), "format": "preference", "fields": {"prompt": "question", "chosen": "good",
                                                                      "rejected": "bad"}},
               {"path": str(parquet), "format": "preference"}]
    recipe = load_recipe(write_tiny_recipe(tmp_path / "dpo.yaml", tiny_qwen25, jsonl, data_keys={
        "sources": sources, "max_bad_fraction": 0.5}, training={"method": "dpo"}))
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    train = pq.read_table(paths.train_data)
    assert train.column_names == ["id", "source", "prompt_ids", "chosen_ids", "rejected_ids", "truncated"]
    assert str(train.schema.field("prompt_ids").type) == "list<element: int32>"
    train = train.to_pylist()
    heldout = _read(paths.heldout_data)
    by_source = {r["source"]: r for r in train}
    assert manifest["method"] == "dpo" and manifest["rows"]["train"] == len(train)
    rejected = _rejected(recipe)
    contaminated = sum(r["kind"] == "contaminated" for r in rejected.values())
    assert len(train) + len(heldout) + contaminated == 16 + 3 + 6 + 6  # jsonl: 1-16, 18, 19, 25; csv; parquet
    assert {f"{csv}:{line}" for line in range(2, 8)} | {f"{parquet}:row {n}" for n in range(1, 7)} <= set(by_source)

    # rendering: prompt_ids are the SFT render's tokens before the first trained one, sides through the last
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25)
    renderer = Renderer(tokenizer)
    system = {"role": "system", "content": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}
    for line, row in enumerate(rows[:16], start=1):
        pair = by_source.get(f"{jsonl}:{line}")
        if pair is None:
            continue
        for side in ("chosen", "rejected"):
            sft = renderer.render([{"role": "user", "content": row["prompt"]},
                                   {"role": "assistant", "content": row[side]}], 10_000)
            first = sft.assistant_masks.index(1)
            assert pair["prompt_ids"] == sft.input_ids[:first]
            assert pair[f"{side}_ids"] == sft.input_ids[first:]
            assert tokenizer.decode(pair[f"{side}_ids"]) == row[side] + "<|im_end|>\n"
    assert all(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) <= 64 for r in train)
    multi = by_source[f"{jsonl}:19"]  # multi-turn prompt: the earlier answer is prompt, never trained
    assert "Hello!" in tokenizer.decode(multi["prompt_ids"])
    assert tokenizer.decode(multi["chosen_ids"]) == "Done, wrote to <EMAIL><|im_end|>\n"
    cut = by_source[f"{jsonl}:25"]
    assert cut["truncated"] and len(cut["prompt_ids"]) + len(cut["chosen_ids"]) == 64 and len(cut["rejected_ids"]) < 9
    held = [r for r in heldout if r["source"] in {f"{jsonl}:{line}" for line in range(1, 17)}]
    assert held and all(r["reference"] == rows[int(r["source"].rsplit(":", 1)[1]) - 1]["chosen"] for r in held)
    assert held[0]["prompt"] == renderer.prompt(json.loads(held[0]["messages"]))

    # quarantine: file:line and reason; the pair (not the prompt + chosen) is what dedup compares
    assert rejected[f"{jsonl}:17"]["reason"] == "exact duplicate"
    assert rejected[f"{jsonl}:17"]["duplicate_of"] == f"{jsonl}:1"
    # line 18 is no duplicate of line 1 but, held out, its chosen conversation is line 1's: contamination
    assert rejected[f"{jsonl}:18"]["reason"] == "held-out row overlaps a training row"
    assert rejected[f"{jsonl}:20"] == {**rejected[f"{jsonl}:20"], "line": 20, "kind": "bad", "reason": "chosen is empty"}
    assert rejected[f"{jsonl}:21"]["reason"] == "chosen and rejected are identical: the pair teaches nothing"
    mismatch = "the prompt renders differently for chosen and rejected (chosen has {} where rejected has {})"
    assert rejected[f"{jsonl}:22"]["reason"] == mismatch.format("'assistant'", "'user'")  # an extra user turn
    assert rejected[f"{jsonl}:23"]["reason"] == mismatch.format(repr("\n\n"), repr("\n"))
    assert rejected[f"{jsonl}:23"]["kind"] == rejected[f"{jsonl}:24"]["kind"] == "bad"
    assert rejected[f"{jsonl}:24"]["reason"] == "prompt fills training.max_length"
    assert rejected[f"{jsonl}:19"]["kind"] == "changed" and manifest["pii"] == {"EMAIL": 2}

    # card: pair counts, token spread, length bias, refusals
    card = json.loads((paths.data_dir / "data_card.json").read_text())
    stats = card["preference"]
    chosen = [len(r["chosen_ids"]) for r in train]
    assert stats == manifest["preference"] and card["method"] == "dpo"
    assert stats["pairs"] == len(train)
    assert stats["chosen_tokens"]["mean"] == round(sum(chosen) / len(chosen), 2)
    assert stats["chosen_longer_share"] == round(sum(len(r["chosen_ids"]) > len(r["rejected_ids"]) for r in train)
                                                 / len(train), 4)
    assert 0 < stats["chosen_longer_share"] < 1
    assert stats["identical_pairs_refused"] == 1 and stats["prompt_mismatch_refused"] == 2
    assert "## Preference data (dpo)" in (paths.data_dir / "data_card.md").read_text()
    assert "packed_fraction" not in card["padding"]

    # the mask audit shows both sides of a pair
    from data_prep.report import print_audit

    print_audit(recipe, manifest, samples=1, color=False)
    out = capsys.readouterr().out
    assert "[chosen] [[" in out and "[rejected] [[" in out and "<|im_end|>" in out

    # the hash follows the method (sft keeps the hash it always had: tests/test_methods.py pins it)
    sft = recipe.model_copy(deep=True)
    sft.training.method = "sft"
    assert data_hash(sft) != manifest["data_hash"] == data_hash(recipe)


def test_kto_unpairs_pairs_and_reads_labels_from_csv(tmp_path: Path, tiny_qwen25: Path) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", _pairs(8))
    labels = ["true", "false", "1", "0", "TRUE", "False"] * 3
    unpaired = _write_csv(tmp_path / "thumbs.csv", ["prompt", "completion", "label"],
                          [[f"Rate hotel {i}", f"Hotel {i} is fine", label] for i, label in enumerate(labels)]
                          + [["Rate x", "x", "maybe"]])
    sources = [{"path": str(pairs), "format": "preference"},
               {"path": str(unpaired), "format": "unpaired_preference"}]
    recipe = load_recipe(write_tiny_recipe(tmp_path / "kto.yaml", tiny_qwen25, pairs, data_keys={
        "sources": sources, "max_bad_fraction": 0.2, "heldout_fraction": 0.4}, training={"method": "kto"}))
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    table = pq.read_table(paths.train_data)
    assert table.column_names == ["id", "source", "prompt_ids", "completion_ids", "label", "truncated"]
    train, heldout = table.to_pylist(), _read(paths.heldout_data)
    from_pairs = [r for r in train if r["source"].startswith(str(pairs))]
    assert len(from_pairs) == 2 * len({r["source"] for r in from_pairs}) > 0
    for good, bad in zip(from_pairs[::2], from_pairs[1::2]):  # a pair: chosen (true) then rejected (false)
        assert good["source"] == bad["source"] and good["prompt_ids"] == bad["prompt_ids"]
        assert (good["label"], bad["label"]) == (True, False) and good["completion_ids"] != bad["completion_ids"]
    thumbs = {int(r["source"].rsplit(":", 1)[1]): r["label"] for r in train if r["source"].startswith(str(unpaired))}
    assert all(thumbs[line] == (labels[line - 2].lower() in ("true", "1")) for line in thumbs)
    undesirable = {line for line, label in enumerate(labels, start=2) if label.lower() in ("false", "0")}
    assert undesirable <= set(thumbs)  # undesirable rows are always trained on, never held out
    held_thumbs = [r for r in heldout if r["source"].startswith(str(unpaired))]
    assert held_thumbs and all(r["reference"].startswith("Hotel") for r in held_thumbs)
    stats = manifest["preference"]
    assert stats["desirable"] == sum(r["label"] for r in train)
    assert stats["undesirable"] == len(train) - stats["desirable"] == len(undesirable) + len(from_pairs) // 2
    assert manifest["rows"]["train"] == len(train)
    reason = _rejected(recipe)[f"{unpaired}:20"]["reason"]
    assert reason == "field 'label' must be true or false (desirable or not), got 'maybe'"
    assert "KTO rows:" in (paths.data_dir / "data_card.md").read_text()


def test_grpo_rows_carry_prompt_and_reference_and_eval_sets_take_pairs(tmp_path: Path, tiny_qwen25: Path) -> None:
    from transformers import AutoTokenizer

    chat = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", _pairs(4, 50))
    recipe = load_recipe(write_tiny_recipe(
        tmp_path / "grpo.yaml", tiny_qwen25, chat, training={"method": "grpo"},
        data_keys={"eval_sets": {"prefs": [{"path": str(pairs), "format": "preference"}]}},
        tail="grpo: {rewards: [json_valid]}\n"))
    manifest = prepare(recipe)
    paths = run_paths(recipe)
    train = pq.read_table(paths.train_data)
    assert train.column_names == pq.read_table(paths.heldout_data).column_names == [
        "id", "source", "input_ids", "assistant_masks", "truncated", "trained_turns", "role_tokens", "role_trained",
        "messages", "prompt", "reference"]
    renderer = Renderer(AutoTokenizer.from_pretrained(tiny_qwen25))
    for row in train.to_pylist():
        messages = json.loads(row["messages"])
        assert row["prompt"] == renderer.prompt(messages) and row["reference"] == messages[-1]["content"]
        assert row["input_ids"] == renderer.render(messages, 64).input_ids
    prefs = _read(paths.data_dir / "eval" / "prefs.parquet")
    assert sorted(r["reference"] for r in prefs) == sorted(r["chosen"] for r in _pairs(4, 50))
    assert manifest["method"] == "grpo" and "preference" not in manifest
