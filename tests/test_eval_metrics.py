"""Eval metrics on hand-checked examples, including empty, invalid and unicode answers."""

from __future__ import annotations

import pytest

from tailor.metrics import exact_match, json_field_accuracy, json_field_scores, json_valid, parse_json


@pytest.mark.parametrize("prediction,reference,expected", [
    ("Paris", "Paris", 1.0),
    ("  Paris\n", "Paris", 1.0),
    ("paris", "Paris", 0.0),
    ("", "Paris", 0.0),
    ("北京", "北京", 1.0),
])
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize("prediction,expected", [
    ('{"a": 1}', 1.0),
    ('```json\n{"a": 1}\n```', 1.0),
    ('{"a": 1', 0.0),
    ("", 0.0),
    ("Sure! Here is the JSON: {\"a\": 1}", 0.0),
    ('"just a string"', 1.0),
])
def test_json_valid(prediction: str, expected: float) -> None:
    assert json_valid(prediction, "{}") == expected


def test_parse_json_unicode() -> None:
    assert parse_json('{"city": "Zürich 🏨"}') == (True, {"city": "Zürich 🏨"})


REF = '{"intents": ["booking", "cancel"], "slots": {"date": "tomorrow"}}'


@pytest.mark.parametrize("prediction,expected", [
    (REF, 1.0),
    ('{"intents": ["cancel", "booking"], "slots": {"date": "tomorrow"}}', 1.0),  # list order does not matter
    ('{"intents": ["booking"], "slots": {"date": "tomorrow"}}', 0.5),
    ('{"intents": ["booking", "cancel"], "slots": {}}', 0.5),
    ('{"slots": {"date": "tomorrow"}}', 0.5),
    ('["booking"]', 0.0),
    ("not json", 0.0),
    ("", 0.0),
])
def test_json_field_accuracy(prediction: str, expected: float) -> None:
    assert json_field_accuracy(prediction, REF) == expected


def test_json_field_accuracy_selected_fields_and_non_json_reference() -> None:
    prediction = '{"intents": ["booking"], "slots": {"date": "tomorrow"}}'
    assert json_field_scores(prediction, REF, ["slots"]) == {"slots": 1.0}
    assert json_field_accuracy(prediction, REF, fields=["intents"]) == 0.0
    assert json_field_accuracy(prediction, "plain text reference") is None
