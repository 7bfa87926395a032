"""Comparisons beyond base vs tuned: other run folders, external predictions files, merged model folders, custom
metrics, and bad input (missing/duplicated/extra ids, inapplicable metrics, labels outside the set, no adapter)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_prep.prepare import prepare
from eval.run import evaluate, format_table
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def make_adapter(recipe, folder: Path, seed: int = 0) -> Path:
    """A random (non-zero) LoRA adapter on the recipe's base model, saved like `make train` saves one: quick,
    and different from the base, which is all an eval test needs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tailor.models import load_model, load_tokenizer

    torch.manual_seed(seed)
    model = get_peft_model(load_model(recipe.model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    model.save_pretrained(folder)
    load_tokenizer(recipe.model).save_pretrained(folder)
    (folder / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")))
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_qwen25: Path):
    """A run on the tiny Qwen2.5 with prepared data, a random adapter and one finished eval."""
    from conftest import chat_rows, write, write_jsonl

    tmp = tmp_path_factory.mktemp("compare")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(40))
    path = write(tmp / "recipe.yaml", f"""
        name: cmp
        output_dir: {tmp / 'runs'}
        model: {{name_or_path: {tiny_qwen25}}}
        data: {{sources: [{{path: {data}}}], heldout_fraction: 0.25}}
        eval: {{metrics: [exact_match, json_valid, token_f1], max_new_tokens: 6, batch_size: 8, max_rows: 6,
                bootstrap_resamples: 500, custom_metrics: ['eval_metric_example:mentions_number']}}
        tracking: {{mode: disabled}}
    """)
    recipe = load_recipe(path)
    prepare(recipe)
    make_adapter(recipe, run_paths(recipe).adapter_dir)
    results = evaluate(recipe)
    return path, recipe, results


def predictions_of(recipe) -> list[dict]:
    return [json.loads(line) for line in run_paths(recipe).predictions.read_text().splitlines()]


def test_results_have_cost_reports_and_all_pairs(evaluated) -> None:
    _, recipe, results = evaluated
    paths = run_paths(recipe)
    cost = results["cost"]
    assert cost["gpus"] == 0 and cost["gpu_hours"] == 0 and cost["cpu_hours"] > 0
    for variant in ("base", "tuned"):
        g = cost["generation"][variant]
        assert 0 < g["generated_tokens"] <= 6 * 6 and g["tokens_per_second"] > 0
    assert results["pairs"]["base"] == results["comparisons"]
    assert (paths.eval_dir / "report.md").is_file() and (paths.eval_dir / "report.html").is_file()
    assert len(results["hashes"]["tuned"]["adapter_model.safetensors"]) == 64
    assert "cost:" in format_table(results)


def test_other_run_and_external_predictions_missing_extra_ids_think_blocks(evaluated, tmp_path: Path) -> None:
    _, recipe, _ = evaluated
    rows = predictions_of(recipe)
    other = tmp_path / "other-run"
    shutil.copytree(run_paths(recipe).root, other)
    # a "vendor" thinking model (Qwen3-style output) that answers the reference exactly after its think block, on
    # all rows except two, plus one id nobody asked for
    lines = [{"id": r["id"], "prediction": f"<think>\nThe user wants JSON. Easy.\n</think>\n\n{r['reference']}"}
             for r in rows[2:]] + [{"id": "nope", "prediction": "x"}]
    file = tmp_path / "vendor.jsonl"
    file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = evaluate(recipe, compare_runs=[str(other)], prediction_files=[f"vendor={file}"])

    info = results["variants"]["vendor"]
    assert info["missing_ids"] == 2 and info["extra_ids"] == 1 and set(info["missing_examples"]) == {
        rows[0]["id"], rows[1]["id"]}
    vendor = results["models"]["vendor"]
    assert vendor["exact_match"] == 1.0 and vendor["missing_rows"] == 2  # scored on the answer after </think>
    assert vendor["think_rows"] == len(rows) - 2 and vendor["think_chars_mean"] == len("The user wants JSON. Easy.")
    assert 3 <= vendor["think_tokens_mean"] <= 10
    pair = results["pairs"]["vendor"]["exact_match"]
    assert pair["n"] == len(rows) - 2 and pair["excluded"] == 2 and pair["base_mean"] == 1.0
    assert pair["delta"] < 0 and pair["excludes_zero"]  # a random adapter is far worse than the references
    assert results["pairs"]["base"]["exact_match"]["n"] == len(rows)  # other pairs keep every row
    report = (run_paths(recipe).eval_dir / "report.md").read_text()
    assert "vendor: 2 held-out rows have no prediction" in report and "1 ids in the predictions file" in report
    assert "tuned vs vendor" in format_table(results)
    written = predictions_of(recipe)[2]
    assert written["vendor_answer"] == written["reference"] and written["vendor_thinking"].startswith("The user")

    # the other run has predictions for the same rows, prompts and settings: reused, not generated again
    assert results["variants"]["other-run"]["kind"] == "predictions" and "other-run" not in results["seconds"]
    same = results["pairs"]["other-run"]["exact_match"]  # it is the same adapter: identical outputs
    assert same["delta"] == 0 and same["better"] == same["worse"] == 0


def test_merged_model_folder_other_run_adapter_and_folder_errors(evaluated, tmp_path: Path) -> None:
    from peft import PeftModel

    from tailor.models import load_model

    path, recipe, first = evaluated
    adapter = run_paths(recipe).adapter_dir
    other = tmp_path / "other-run"
    shutil.copytree(run_paths(recipe).root, other)
    merged = PeftModel.from_pretrained(load_model(recipe.model), str(adapter)).merge_and_unload()
    folder = tmp_path / "merged"
    merged.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(adapter / name, folder)
    # other generation settings: the other run's predictions do not stand for these, so its adapter runs
    changed = load_recipe(path, ["eval.max_new_tokens=5", "eval.compare_base=false"])
    results = evaluate(changed, model_dir=folder, compare_runs=[str(other)])
    assert results["model"] == str(folder) and results["variants"]["tuned"]["kind"] == "model"
    assert results["variants"]["other-run"]["kind"] == "adapter"
    assert "max_new_tokens" in results["variants"]["other-run"]["predictions_not_reused"]
    # merging is exact up to float rounding: the merged model scores like base + the same adapter
    for variant in ("tuned", "other-run"):
        assert results["models"][variant]["loss"] == pytest.approx(first["models"]["tuned"]["loss"], rel=1e-4)
    assert set(results["hashes"]["tuned"]) == {"model.safetensors"}

    with pytest.raises(TailorError, match=f"holds a full model .*--model {folder}"):
        evaluate(recipe, adapter=folder)
    with pytest.raises(TailorError, match="this is an adapter, not a full model"):
        evaluate(recipe, model_dir=adapter)
    with pytest.raises(TailorError, match="holds no adapter.*make train"):
        evaluate(recipe, adapter=tmp_path)
    shutil.rmtree(other / "adapter")
    with pytest.raises(TailorError, match="no adapter/ to evaluate"):
        evaluate(changed, compare_runs=[str(other)])


def test_custom_metric_rules_and_label_set_errors(evaluated) -> None:
    path, recipe, results = evaluated
    assert "mentions_number" in results["models"]["tuned"] and "mentions_number" in results["metric_names"]
    assert "mentions_number" in results["pairs"]["base"]
    with pytest.raises(TailorError, match="lives outside the project"):
        evaluate(load_recipe(path, ["eval.custom_metrics=[json:dumps]"]))
    with pytest.raises(TailorError, match="cannot import 'no_such_module'"):
        evaluate(load_recipe(path, ["eval.custom_metrics=[no_such_module:f]"]))
    # optional engines and guards that are not installed here: a clear message, before any model loads
    with pytest.raises(TailorError, match="eval.backend: vllm was asked for but vllm is not installed"):
        evaluate(load_recipe(path, ["eval.backend=vllm"]))
    with pytest.raises(TailorError, match="eval.general_tasks needs lm-evaluation-harness"):
        evaluate(load_recipe(path, ["eval.general_tasks=[arc_easy]"]))
    from eval.backends import resolve_backend

    assert resolve_backend(load_recipe(path, ["eval.backend=auto"]).eval) == "hf"  # auto falls back, no error
    # the references of this task are JSON objects, not labels: an error before any model loads
    with pytest.raises(TailorError, match="eval.labels: .*not one of the labels"):
        evaluate(load_recipe(path, ["eval.metrics=[classification]", "eval.labels=[pos, neg]"]))


def test_inapplicable_metric_and_label_outside_set_in_scoring(tmp_path: Path) -> None:
    from conftest import write

    from eval.scoring import check_applicable, score

    (tmp_path / "d.jsonl").write_text("{}\n")
    r = load_recipe(write(tmp_path / "r.yaml", """
        name: s
        model: {name_or_path: x/y}
        data: {sources: [{path: d.jsonl}]}
        eval: {metrics: [json_field_accuracy, exact_match]}
    """))
    plain = [{"id": "0", "reference": "hello"}, {"id": "1", "reference": "world"}]
    with pytest.raises(TailorError, match="json_field_accuracy applies to none of the 2 held-out rows .*not JSON"):
        check_applicable(plain, r)
    mixed = [{"id": "0", "reference": '{"a": 1}'}, {"id": "1", "reference": "world"}]
    check_applicable(mixed, r)  # one row applies: fine, the other is a counted exclusion
    summary, per_row = score(['{"a": 1}', "world"], mixed, r)
    assert summary["json_field_accuracy"] == 1.0 and summary["json_field_accuracy_excluded_rows"] == 1
    assert per_row[1]["json_field_accuracy"] is None

    labelled = load_recipe(write(tmp_path / "l.yaml", """
        name: s
        model: {name_or_path: x/y}
        data: {sources: [{path: d.jsonl}]}
        eval: {metrics: [classification], labels: [pos, neg]}
    """))
    summary, _ = score(["pos", "banana", None], [{"id": str(i), "reference": "pos"} for i in range(3)], labelled)
    assert summary["outside_label_set"] == 1 and summary["classification"] == 0.5 and summary["missing_rows"] == 1


@pytest.mark.parametrize("content,message", [
    ('{"id": "a", "prediction": "x"}\n{"id": "a", "prediction": "y"}\n', "id 'a' appears twice"),
    ('{"id": "a"}\n', 'needs an "id" and a "prediction"'),
    ('{"id": "a", "prediction": 3}\n', '"prediction" must be a string'),
    ('{"id": "a", "prediction": "x"\n', "not valid JSON"),
    ('{"id": "zzz", "prediction": "x"}\n', "none of its 1 ids matches"),
])
def test_bad_predictions_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    from eval.variants import read_predictions

    file = tmp_path / "p.jsonl"
    file.write_text(content)
    with pytest.raises(TailorError, match=message):
        read_predictions(file, [{"id": "a"}, {"id": "b"}], "p")
