"""Property-based tests (hypothesis): whatever a user writes, the recipe loader and the format converters answer with
a result or a clear TailorError / RowError, never another exception."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.formats import to_messages
from tailor.render import RowError
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.schema import DataSource

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON-like values of any shape: what a YAML file or a JSONL row can hold
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)
KEYS = ["name", "model.name_or_path", "model.dtype", "data.heldout_fraction", "data.sources", "data.num_proc",
        "peft.r", "peft.method", "peft.target_modules", "training.lr", "training.batch_size", "training.max_steps",
        "training.strategy", "eval.metrics", "eval.max_new_tokens", "tracking.mode", "training.no_such_key", "bogus"]


@pytest.fixture(scope="module")
def base_recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("props")
    (folder / "data.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                                {"role": "assistant", "content": "yo"}]}) + "\n")
    path = folder / "r.yaml"
    path.write_text("name: p\nmodel: {name_or_path: some/model}\ndata: {sources: [{path: data.jsonl}]}\n")
    return path


@SETTINGS
@given(key=st.sampled_from(KEYS), value=values)
def test_any_override_is_valid_or_a_clear_error(base_recipe, key, value) -> None:
    override = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    try:
        recipe = load_recipe(base_recipe, [override])
    except TailorError as err:
        assert str(err).strip()
        return
    assert recipe.name  # loaded: the schema accepted it


@SETTINGS
@given(document=st.dictionaries(st.sampled_from(["name", "model", "data", "peft", "training", "eval", "base", "x"]),
                                values, max_size=6))
def test_any_recipe_document_is_valid_or_a_clear_error(tmp_path_factory, document) -> None:
    path = tmp_path_factory.mktemp("doc") / "r.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        load_recipe(path)
    except TailorError as err:
        assert str(path.name) in str(err) or "recipe" in str(err).lower()


message = st.fixed_dictionaries({}, optional={"role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool",
                                                                               "human", "gpt", "alien"]), values),
                                             "content": st.one_of(st.text(max_size=20), values),
                                             "from": st.sampled_from(["human", "gpt", "robot"]),
                                             "value": st.one_of(st.text(max_size=20), values),
                                             "train": values, "tool_calls": values})
rows = st.fixed_dictionaries({}, optional={"messages": st.one_of(st.lists(message, max_size=4), values),
                                           "conversations": st.one_of(st.lists(message, max_size=4), values),
                                           "instruction": st.one_of(st.text(max_size=20), values),
                                           "input": st.one_of(st.text(max_size=20), values),
                                           "output": st.one_of(st.text(max_size=20), values),
                                           "prompt": st.one_of(st.text(max_size=20), values),
                                           "completion": st.one_of(st.text(max_size=20), values),
                                           "text": st.one_of(st.text(max_size=20), values)})


@SETTINGS
@given(row=rows, fmt=st.sampled_from(["messages", "sharegpt", "alpaca", "prompt_completion", "text"]),
       system=st.one_of(st.none(), st.text(max_size=10)))
def test_any_row_converts_or_is_rejected_with_a_reason(row, fmt, system) -> None:
    source = DataSource(path="x.jsonl", format=fmt)
    try:
        messages = to_messages(row, source, system)
    except RowError as err:
        assert str(err).strip()
        return
    assert isinstance(messages, list) and messages
    for m in messages:
        assert m["role"] in ({"text"} if fmt == "text" else {"system", "user", "assistant", "tool"})
        assert isinstance(m["content"], str)
