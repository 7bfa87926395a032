"""Data stage end to end: formats, PII never reaching the prepared data, dedup, contamination, mixing, cache keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import chat_rows, write, write_jsonl
from data_prep import prepare as prepare_module
from data_prep.prepare import prepare
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def recipe_for(tmp_path: Path, model: Path, sources: str, extra: str = "", overrides: tuple = ()):
    path = write(tmp_path / "recipe.yaml", f"""
        name: clean
        output_dir: {tmp_path / 'runs'}
        model: {{name_or_path: {model}}}
        data:
          sources:
        {sources}
          heldout_fraction: 0.25
        {extra}
        training: {{max_length: 128}}
        tracking: {{mode: disabled}}
    """)
    return load_recipe(path, list(overrides))


def heldout_and_train(recipe) -> tuple[list[dict], list[dict]]:
    from datasets import load_dataset

    paths = run_paths(recipe)
    return (load_dataset("parquet", data_files=str(paths.heldout_data), split="train").to_list(),
            load_dataset("parquet", data_files=str(paths.train_data), split="train").to_list())


def test_sharegpt_custom_roles_text_and_mixing(tmp_path: Path, tiny_qwen25: Path) -> None:
    share = write_jsonl(tmp_path / "share.jsonl", [
        {"conversations": [{"from": "customer", "value": f"Where is order {i}?"},
                           {"from": "agent", "value": f"Order {i} ships on day {i % 7}."}]} for i in range(20)])
    text = write_jsonl(tmp_path / "text.jsonl", [{"body": f"Hotel policy number {i}: pets are welcome in wing "
                                                          f"{chr(65 + i % 26)} at level {i}."} for i in range(20)])
    sources = f"""
            - {{path: {share}, format: sharegpt, role_map: {{customer: user, agent: assistant}}}}
            - {{path: {text}, format: text, fields: {{text: body}}, weight: 2.0}}"""
    recipe = recipe_for(tmp_path, tiny_qwen25, sources, overrides=("data.clean.dedup.near=false",))
    manifest = prepare(recipe)
    heldout, train = heldout_and_train(recipe)
    from_text = [r for r in train if "text.jsonl" in r["source"]]
    from_share = [r for r in train if "share.jsonl" in r["source"]]
    assert len(from_text) == 2 * len({r["source"] for r in from_text})  # weight 2.0 repeats each row twice
    assert all(all(r["assistant_masks"]) for r in from_text)  # plain text: every token is trained
    assert from_share and all(0 < sum(r["assistant_masks"]) < len(r["input_ids"]) for r in from_share)
    assert manifest["rows"]["read"] == 40
    assert any(r["prompt"] == "" and r["reference"] == "" for r in heldout if "text.jsonl" in r["source"])


def test_pii_is_redacted_everywhere_and_counted(tmp_path: Path, tiny_qwen25: Path) -> None:
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    rows = chat_rows(20)
    rows[3]["messages"][0]["content"] = f"Mail me at {email} and charge {card}"
    rows[7]["messages"][1]["content"] = "Call +44 20 7946 0958 or ping 192.0.2.44"
    data = write_jsonl(tmp_path / "pii.jsonl", rows)
    recipe = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {data}}}",
                        overrides=("data.clean.pii.patterns={GUEST: 'G-[0-9]{5}'}",))
    manifest = prepare(recipe)
    assert manifest["pii"] == {"EMAIL": 1, "CARD": 1, "PHONE": 1, "IP": 1}
    assert manifest["rows"]["pii_redacted_rows"] == 2
    folder = run_paths(recipe).data_dir
    everything = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    for secret in (email, card, "7946 0958", "192.0.2.44"):
        assert secret.encode() not in everything, f"{secret} leaked into {folder}"
    heldout, train = heldout_and_train(recipe)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen25)
    decoded = " ".join(tok.decode(r["input_ids"]) for r in train + heldout)
    assert "<EMAIL>" in decoded and "<CARD>" in decoded and "<PHONE>" in decoded
    changed = [json.loads(l) for l in (folder / "rejected.jsonl").read_text().splitlines() if '"changed"' in l]
    assert {c["reason"] for c in changed} == {"pii redacted"} and len(changed) == 2


def test_near_duplicates_and_contamination_are_removed_and_listed(tmp_path: Path, tiny_qwen25: Path) -> None:
    long = "the guest asked whether the rooftop pool and the sauna are open late on sunday evenings in winter"
    rows = chat_rows(60)
    rows += [{"messages": [{"role": "user", "content": long + f" please {i}"},
                           {"role": "assistant", "content": "Yes, until ten."}]} for i in range(6)]
    data = write_jsonl(tmp_path / "dups.jsonl", rows)
    recipe = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {data}}}",
                        overrides=("data.clean.dedup.threshold=0.7",))
    manifest = prepare(recipe)
    reasons = manifest["rows"]["rejected_by_reason"]
    assert reasons.get("near duplicate") == 5  # six variants of one long message: the first is kept
    off = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {data}}}",
                     overrides=("data.clean.dedup.near=false", "data.contamination.threshold=0.6"))
    manifest = prepare(off)
    heldout_long = [r for r in heldout_and_train(off)[0] if long in r["messages"]]
    assert manifest["contamination"]["removed"] >= 1 and not heldout_long


def test_custom_filter_from_the_project_and_outside_refused(tmp_path: Path, tiny_qwen25: Path) -> None:
    rows = chat_rows(10)
    rows[2]["messages"][0]["content"] = "I want a refund"
    data = write_jsonl(tmp_path / "f.jsonl", rows)
    recipe = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {data}}}",
                        overrides=("data.clean.filters=[filters_example:drop_refunds]",))
    assert prepare(recipe)["rows"]["rejected_by_reason"] == {"mentions refund": 1}
    outside = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {data}}}",
                         overrides=("data.clean.filters=[json:dumps]",))
    with pytest.raises(TailorError, match="outside the project"):
        prepare(outside)


def test_save_to_disk_folder_source(tmp_path: Path, tiny_qwen25: Path) -> None:
    from datasets import Dataset

    Dataset.from_list(chat_rows(12)).save_to_disk(str(tmp_path / "ds"))
    recipe = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {tmp_path / 'ds'}}}")
    assert prepare(recipe)["rows"]["read"] == 12


SLOW = pytest.mark.slow  # ~9 s each; a data-file change is also covered by test_data_prep's cache test


@pytest.mark.parametrize("change", ["recipe data section", "tokenizer template", pytest.param("data file", marks=SLOW),
                                    pytest.param("template file", marks=SLOW),
                                    pytest.param("data_prep code", marks=SLOW)])
def test_cache_is_invalidated_by_each_input(change: str, tmp_path: Path, tiny_qwen25: Path, monkeypatch) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_qwen25, model)
    data = write_jsonl(tmp_path / "c.jsonl", chat_rows(12))
    template = tmp_path / "t.jinja"
    template.write_text((model / "chat_template.jinja").read_text())
    sources = f"    - {{path: {data}}}"
    extra = f"template: {template}"
    recipe = recipe_for(tmp_path, model, sources, extra="  " + extra)
    first = prepare(recipe)
    assert prepare(recipe).get("cached") is True
    if change == "data file":
        write_jsonl(data, chat_rows(13))
    elif change == "recipe data section":
        recipe = recipe_for(tmp_path, model, sources, extra="  " + extra, overrides=("data.split_seed=3",))
    elif change == "template file":
        template.write_text(template.read_text() + "\n")
    elif change == "tokenizer template":
        recipe = recipe_for(tmp_path, model, sources)  # no template file: the tokenizer's own is used ...
        prepare(recipe)
        assert prepare(recipe).get("cached") is True
        (model / "chat_template.jinja").write_text((model / "chat_template.jinja").read_text() + "\n")  # ... changed
    else:
        monkeypatch.setattr(prepare_module, "code_version", lambda: "a different data_prep")
    again = prepare(recipe)
    assert not again.get("cached") and again["cache_key"] != first["cache_key"]


def test_bad_input_corpus_is_quarantined_with_line_and_reason(tmp_path: Path, tiny_qwen25: Path) -> None:
    good = [json.dumps(r) for r in chat_rows(40)]
    bad = {
        41: '{"messages": [',                                                           # malformed JSON
        42: json.dumps({"messages": "not a list"}),                                     # wrong type
        43: json.dumps({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}),
        44: json.dumps({"other": 1}),                                                   # missing field
        45: json.dumps({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    }
    huge = json.dumps({"messages": [{"role": "user", "content": "summarise: " + "lorem ipsum " * 90_000},
                                    {"role": "assistant", "content": "ok"}]})          # a ~1 MB record
    path = tmp_path / "corpus.jsonl"
    with path.open("wb") as handle:
        handle.write(("\n".join(good) + "\n").encode())
        handle.write(("\n".join(bad[k] for k in sorted(bad)) + "\n").encode())
        handle.write(b'{"messages": "\xff\xfe"}\n')                                    # line 46: not UTF-8
        handle.write((huge + "\n").encode())                                           # line 47
    recipe = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {path}}}", overrides=("data.max_bad_fraction=0.2",))
    manifest = prepare(recipe)
    rejected = {r["line"]: r for r in map(json.loads, run_paths(recipe).rejected.read_text().splitlines())}
    assert set(rejected) == {41, 42, 43, 44, 45, 46, 47}
    assert "malformed JSON" in rejected[41]["reason"] and "not UTF-8" in rejected[46]["reason"]
    assert "unknown role 'wizard'" in rejected[45]["reason"] and "non-empty list" in rejected[42]["reason"]
    assert "no trainable token within training.max_length" == rejected[47]["reason"]  # the answer is past 128 tokens
    assert manifest["rows"]["read"] == 47 and manifest["rows"]["bad"] == 7
    assert manifest["rows"]["train"] + manifest["rows"]["heldout"] == 40
    strict = recipe_for(tmp_path, tiny_qwen25, f"    - {{path: {path}}}", overrides=("data.max_bad_fraction=0.1",))
    with pytest.raises(TailorError, match=r"7 of 47 rows \(14.9%\) are bad"):
        prepare(strict)
