"""GRPO rewards are eval's metrics (no model): each reward gives the number eval reports for the same answer and
reference, on plain and conversational completions, after the reasoning block; None counts 0; weights and names
come from the recipe; project functions are checked before any model loads, errors naming file:line and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from conftest import chat_rows, write_jsonl, write_tiny_recipe
from eval.scoring import score
from tailor.errors import TailorError
from tailor.metrics import all_metrics
from tailor.recipe import load_recipe
from tailor.schema import MetricName, Recipe
from tailor.thinking import split_thinking
from train.rewards import check_rewards, completion_text, reward_functions

PROJECT_METRIC = "eval_metric_example:mentions_number"  # tests/eval_metric_example.py


def grpo_recipe(tmp_path: Path, rewards: list, eval: dict | None = None, metrics: list[str] | None = None) -> Path:
    """A grpo recipe whose grpo section (written last, one reward per line) names `rewards`; `metrics`: eval also
    reports these (built-in names and project functions go to eval.metrics / eval.custom_metrics)."""
    data = write_jsonl(tmp_path / "data" / "chat.jsonl", chat_rows(4))
    eval = dict(eval or {})
    if metrics:
        eval["metrics"] = [m for m in metrics if ":" not in m]
        eval["custom_metrics"] = [m for m in metrics if ":" in m]
    lines = "".join(f"    - {json.dumps(r)}\n" for r in rewards)
    return write_tiny_recipe(tmp_path / "recipe.yaml", "x/y", data, training={"method": "grpo"}, eval=eval,
                             tail=f"grpo:\n  rewards:\n{lines}")


def line_of(path: Path, text: str) -> str:
    """'file:line' of the first line holding `text`."""
    number = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)
    return f"{path}:{number}"


def as_messages(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def eval_per_row(recipe: Recipe, outputs: list[str], references: list[str]) -> list[dict]:
    """Per-row scores as the eval stage computes them: the answer after the reasoning block, then `score`."""
    answers = [split_thinking(text, recipe.eval.think_tags).answer for text in outputs]
    return score(answers, [{"id": str(i), "reference": r} for i, r in enumerate(references)], recipe)[1]


# Generated outputs and references: JSON answers (fenced, wrong field, invalid), reasoning blocks (closed, never
# closed), plain text, unicode, a reference that is no JSON object (json_field_accuracy: None).
STRUCTURED = [
    ('{"number": 3, "tags": ["b", "a"]}', '{"number": 3, "tags": ["a", "b"]}'),
    ('<think>Hmm, 3 or 4?</think>\n```json\n{"number": 4, "tags": ["a"]}\n```', '{"number": 3, "tags": ["a"]}'),
    ('<think>still thinking about {"number": 5}', '{"number": 5, "tags": []}'),
    ('{"number": 7', '{"number": 7, "tags": ["x"]}'),
    ("The cat sat on the mat.", "the cat sat on a mat"),
    ("<think>short</think>ABC-123", "ABC-123"),
    ("北京是首都", "北京是中国的首都"),
    ('{"number": 1}', "plain text, no JSON object"),
    ("", "non-empty reference"),
]
STRUCTURED_EVAL = {"json_fields": ["number", "tags"], "regex": r"[A-Z]{3}-\d+",
                   "json_schema": {"type": "object", "required": ["number"]}}
LABELS = [("<think>It sounds happy.</think> Positive", "positive"), ("NEGATIVE\n", "negative"),
          ("neutral", "negative"), ("<think>unsure", "positive"), ("ｐｏｓｉｔｉｖｅ", "positive")]


def test_every_metric_is_a_reward() -> None:
    assert set(all_metrics()) == set(get_args(MetricName))


@pytest.mark.parametrize("names,eval,rows", [
    ([m for m in get_args(MetricName) if m != "classification"] + [PROJECT_METRIC], STRUCTURED_EVAL, STRUCTURED),
    (["classification", "exact_match", "exact_match_normalized", "token_f1"],
     {"labels": ["positive", "negative", "neutral"]}, LABELS),
], ids=["structured", "labels"])
def test_rewards_score_what_eval_reports(tmp_path: Path, names: list[str], eval: dict, rows: list) -> None:
    recipe = load_recipe(grpo_recipe(tmp_path, names, eval, metrics=names))
    outputs, references = [o for o, _ in rows], [r for _, r in rows]
    reported = eval_per_row(recipe, outputs, references)
    functions, weights = reward_functions(recipe)
    assert [f.__name__ for f in functions] == [n.partition(":")[2] or n for n in names]
    assert weights == [1.0] * len(names)
    prompts = [f"prompt {i}" for i in range(len(rows))]
    for name, function in zip(names, functions):
        expected = [0.0 if (value := row[function.__name__]) is None else value for row in reported]
        plain = function(prompts=prompts, completions=outputs, completion_ids=[[1]] * len(rows),
                         reference=references, trainer_state=None, log_extra=None, log_metric=None)
        chat = function(prompts=[[{"role": "user", "content": p}] for p in prompts],
                        completions=[as_messages(o) for o in outputs], reference=references)
        assert plain == chat == pytest.approx(expected), name
        assert all(isinstance(value, float) for value in plain)
    if "json_field_accuracy" in names:  # rows eval leaves out (None) are no reward
        assert reported[-2]["json_field_accuracy"] is None and reported[-2]["mentions_number"] is None


def test_the_answer_after_the_reasoning_block_is_scored(tmp_path: Path) -> None:
    recipe = load_recipe(grpo_recipe(tmp_path, ["exact_match"]))
    [reward], _ = reward_functions(recipe)
    outputs = ["<think>Is it 4?</think>\n4", "4</think>4", "<think>4", "4"]  # opening tag in the prompt; unfinished
    assert reward(completions=outputs, reference=["4"] * 4) == [1.0, 1.0, 0.0, 1.0]
    assert reward(completions=[as_messages(o) for o in outputs], reference=["4"] * 4) == [1.0, 1.0, 0.0, 1.0]
    raw = load_recipe(grpo_recipe(tmp_path, ["exact_match"], {"think_tags": None}))
    [reward], _ = reward_functions(raw)  # think_tags: null scores the whole output, as eval does
    assert reward(completions=outputs, reference=["4"] * 4) == [0.0, 0.0, 0.0, 1.0]


def test_not_applicable_counts_zero(tmp_path: Path) -> None:
    recipe = load_recipe(grpo_recipe(tmp_path, ["json_field_accuracy", PROJECT_METRIC]))
    accuracy, mentions = reward_functions(recipe)[0]
    references = ['{"number": 2}', "no JSON object"]
    assert accuracy(completions=['{"number": 2}'] * 2, reference=references) == [1.0, 0.0]
    assert mentions(completions=["2", "2"], reference=references) == [1.0, 0.0]


def test_weights_and_names_come_from_the_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(grpo_recipe(tmp_path, [{"name": "json_valid", "weight": 0.5}, "exact_match",
                                                {"name": PROJECT_METRIC, "weight": 2}]))
    functions, weights = reward_functions(recipe)
    assert [f.__name__ for f in functions] == ["json_valid", "exact_match", "mentions_number"]
    assert weights == [0.5, 1.0, 2.0]
    assert reward_functions(load_recipe(write_tiny_recipe(tmp_path / "sft.yaml", "x/y", "d.jsonl"))) == ([], [])


def test_conversational_completion_text() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "first"}, {"role": "tool", "content": "42"},
                            {"role": "assistant", "content": "final"}]) == "final"
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    assert completion_text([{"role": "assistant", "content": None, "tool_calls": []}]) == ""


def test_rows_without_reference_are_an_error(tmp_path: Path) -> None:
    [reward], _ = reward_functions(load_recipe(grpo_recipe(tmp_path, ["exact_match"])))
    with pytest.raises(TailorError, match="no `reference` column"):
        reward(prompts=["p"], completions=["a"])


@pytest.mark.parametrize("spec,why", [
    ("no_such_module:score", "cannot import 'no_such_module'.*inside the project"),
    ("eval_metric_example:no_such_function", "eval_metric_example has no function 'no_such_function'"),
    ("eval_metric_example:re", "eval_metric_example:re is a module, not a function"),
    ("json:dumps", "outside the project"),
])
def test_check_rewards_names_file_line_key_and_why(tmp_path: Path, spec: str, why: str) -> None:
    path = grpo_recipe(tmp_path, ["exact_match", {"name": spec, "weight": 0.5}])
    recipe = load_recipe(path)
    with pytest.raises(TailorError, match=why) as err:
        check_rewards(recipe)
    assert str(err.value).startswith(f"{line_of(path, spec)}: grpo.rewards.1.name: "), err.value


def test_two_rewards_with_one_name_are_an_error(tmp_path: Path) -> None:
    path = grpo_recipe(tmp_path, [PROJECT_METRIC, {"name": PROJECT_METRIC, "weight": 2}])
    second = line_of(path, '"weight": 2')
    with pytest.raises(TailorError, match="named 'mentions_number' like grpo.rewards.0.name") as err:
        check_rewards(load_recipe(path))
    assert str(err.value).startswith(f"{second}: grpo.rewards.1.name: "), err.value


def test_check_rewards_passes_good_recipes(tmp_path: Path) -> None:
    assert check_rewards(load_recipe(grpo_recipe(tmp_path, ["json_valid", PROJECT_METRIC]))) is None
    assert check_rewards(load_recipe(write_tiny_recipe(tmp_path / "sft.yaml", "x/y", "d.jsonl"))) is None
