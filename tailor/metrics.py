"""Per-row task metrics: ``fn(prediction, reference, **options) -> float | None``, a score in [0, 1] (None when
the row does not apply). eval reports them; GRPO training optimises them as rewards (``train.rewards``), so what is
optimised is what is reported.

``all_metrics`` names the built-in ones (the recipe's ``eval.metrics``, ``MetricName``), ``metric_options`` gives
their options from the recipe's eval section, ``load_metric`` loads a project function 'module.path:function'.
The overlap metrics (``token_f1``, ``rouge_l``, ``chrf``) score 1.0 when both sides are empty after their own
preprocessing (``rouge_score`` and ``sacrebleu`` say 0.0 there) and 0.0 when exactly one is.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

from tailor.errors import TailorError
from tailor.plugins import load_project_function

if TYPE_CHECKING:
    from tailor.schema import Recipe

Metric = Callable[..., float | None]

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


def normalize_label(text: str) -> str:
    """A label as classification compares it: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", text).strip().casefold()


def label_match(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answer is the reference label (``normalize_label``): per-row classification accuracy."""
    return float(normalize_label(prediction) == normalize_label(reference))


# ----------------------------------------------------------------------------------------------- text similarity

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Scripts written without spaces between words (kana; CJK ideographs, compatibility ideographs, extensions A-F):
# each character is its own token (as in BERT's basic tokenizer and MLQA's evaluation).
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U0002f800-\U0002fa1f]")


def _split_cjk(text: str) -> list[str]:
    """Whitespace split, with every CJK ideograph / kana character as a separate token."""
    return text.split() if text.isascii() else _CJK.sub(r" \g<0> ", text).split()


def normalize_answer(text: str) -> str:
    """SQuAD's ``normalize_answer`` (exactly, on ASCII), made Unicode-safe: NFKC, case-fold, delete ASCII and
    Unicode punctuation, drop the articles a/an/the, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_tokens(text: str) -> list[str]:
    """Tokens of ``normalize_answer(text)`` (whitespace split, CJK characters split individually)."""
    return _split_cjk(normalize_answer(text))


def rouge_tokens(text: str) -> list[str]:
    """``rouge_score``'s default tokenizer (no stemming; identical on ASCII) extended to Unicode: NFKC, case-fold,
    letters, digits and combining marks kept, anything else separates tokens, CJK characters are single tokens."""
    if text.isascii():
        return re.findall(r"[a-z0-9]+", text.lower())
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = (ch if ch.isalnum() or unicodedata.category(ch).startswith("M") or _CJK.match(ch) else " " for ch in text)
    return _split_cjk("".join(kept))


def exact_match_normalized(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answers are equal after SQuAD-style normalisation (see ``normalize_answer``)."""
    return float(normalized_tokens(prediction) == normalized_tokens(reference))


def token_f1(prediction: str, reference: str, **_: Any) -> float:
    """SQuAD token F1 (bag-of-tokens overlap) on normalised tokens."""
    pred, ref = normalized_tokens(prediction), normalized_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imports nltk (slow): only when ROUGE-L is scored

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=SimpleNamespace(tokenize=rouge_tokens))


def rouge_l(prediction: str, reference: str, **_: Any) -> float:
    """``rouge_score``'s rougeL F-measure (no stemming) over ``rouge_tokens``."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure  # rouge_score takes (target, prediction)


@lru_cache(maxsize=16)
def _chrf_scorer(char_order: int, beta: float) -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF(char_order=char_order, word_order=0, beta=beta)


def chrf(prediction: str, reference: str, char_order: int = 6, beta: float = 2.0, **_: Any) -> float:
    """Sentence-level chrF of ``sacrebleu.metrics.CHRF(char_order, word_order=0, beta)``, on the 0-1 scale."""
    if char_order < 1:
        raise ValueError(f"chrf: char_order must be >= 1, got {char_order}")
    hyp, ref = "".join(prediction.split()), "".join(reference.split())
    if not hyp or not ref:
        return float(hyp == ref)
    return _chrf_scorer(char_order, beta).sentence_score(prediction, [reference]).score / 100


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"regex_match: invalid pattern {pattern!r}: {err}") from None


def regex_match(prediction: str, reference: str, pattern: str | None = None, **_: Any) -> float:
    """1 when the whitespace-stripped prediction fully matches ``pattern`` (``re.fullmatch``); the reference is
    not used. A missing or invalid pattern raises ValueError."""
    if not isinstance(pattern, str):
        raise ValueError(f"regex_match needs a string `pattern` option, got {pattern!r}")
    return float(_compile(pattern).fullmatch(prediction.strip()) is not None)


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import jsonschema  # runtime dependency, imported here so the other metrics work without it

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ValueError(f"json_schema_valid: invalid JSON schema {schema_json}: {err.message}") from None
    return cls(schema)


def json_schema_valid(prediction: str, reference: str, schema: dict | bool | None = None, **_: Any) -> float:
    """1 when the prediction parses as JSON (``parse_json``) and validates against ``schema`` (draft
    from its ``$schema``, default latest; ``format`` not asserted). A missing or invalid schema raises ValueError."""
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"json_schema_valid needs a `schema` option (a dict), got {schema!r}")
    validator = _validator(json.dumps(schema, sort_keys=True))
    ok, value = parse_json(prediction)
    return float(ok and validator.is_valid(value))


# ----------------------------------------------------------------------------------------------- registry


def all_metrics() -> dict[str, Metric]:
    """Every built-in per-row metric a recipe can name (eval.metrics, grpo.rewards)."""
    text = (exact_match_normalized, token_f1, rouge_l, chrf, regex_match, json_schema_valid)
    return {"exact_match": exact_match, "json_valid": json_valid, "json_field_accuracy": json_field_accuracy,
            "classification": label_match, **{f.__name__: f for f in text}}


def metric_options(recipe: Recipe) -> dict[str, Any]:
    """The options every metric is called with, from the recipe's eval section (each takes the ones it needs)."""
    return {"fields": recipe.eval.json_fields, "pattern": recipe.eval.regex, "schema": recipe.eval.json_schema}


# ----------------------------------------------------------------------------------------------- project metrics


def metric_name(spec: str) -> str:
    """The name a project metric 'module.path:function' has in results: its function name."""
    return spec.partition(":")[2]


def load_metric(spec: str, key: str = "eval.custom_metrics") -> Metric:
    """Import `module.path:function` from inside the project (``tailor.plugins``: no code from site-packages or
    elsewhere on the machine); wrap it so a bad return value is a clear error naming `key`."""
    found = load_project_function(spec, key)

    def checked(prediction: str, reference: str, **_: Any) -> float | None:
        value = found(prediction, reference)
        if value is None:
            return None
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
            raise TailorError(f"{key}: {spec} returned {value!r}; a metric returns a number in [0, 1] "
                              "(or None when the row does not apply).")
        return float(value)

    return checked
