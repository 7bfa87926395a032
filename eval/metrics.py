"""Task metrics on generated answers: each returns a per-row score in [0, 1] (None when not applicable).

Exact-match, JSON and label metrics; text-similarity metrics are in ``eval.text_metrics``, and
``eval.scoring.all_metrics`` names them all."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_json(text: str) -> tuple[bool, Any]:
    """Parse a model answer as JSON; a single surrounding ``` fence is allowed. Returns (ok, value)."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


def exact_match(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answer equals the reference after trimming surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


def json_valid(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answer parses as JSON."""
    return float(parse_json(prediction)[0])


def _normalize(value: Any) -> Any:
    """Compare lists of scalars as multisets (order-free), everything else as is."""
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
        return sorted(value, key=lambda v: (str(type(v)), str(v)))
    return value


def json_field_scores(prediction: str, reference: str, fields: list[str] | None = None) -> dict[str, float] | None:
    """Per-field correctness (1/0) of a JSON answer against a JSON reference (None: the reference is no object)."""
    ok_ref, ref = parse_json(reference)
    if not ok_ref or not isinstance(ref, dict):
        return None
    ok, pred = parse_json(prediction)
    keys = fields if fields is not None else list(ref)
    return {key: float(ok and isinstance(pred, dict) and key in pred and
                       _normalize(pred[key]) == _normalize(ref.get(key))) for key in keys}


def json_field_accuracy(prediction: str, reference: str, fields: list[str] | None = None, **_: Any) -> float | None:
    """Share of the reference's fields (or `fields`) that the answer gets exactly right."""
    scores = json_field_scores(prediction, reference, fields)
    if scores is None or not scores:
        return None
    return sum(scores.values()) / len(scores)


def label_match(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answer is the reference label (NFKC, trimmed, case-folded): per-row classification accuracy."""
    def norm(text: str) -> str:
        return unicodedata.normalize("NFKC", text).strip().casefold()

    return float(norm(prediction) == norm(reference))

