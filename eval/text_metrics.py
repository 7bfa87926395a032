"""Text-similarity, format and classification metrics for generated answers.

Per-row metrics are ``fn(prediction, reference, **options) -> float | None`` in [0, 1], as in ``eval.metrics``.
The overlap metrics (``token_f1``, ``rouge_l``, ``chrf``) score 1.0 when both sides are empty after their own
preprocessing (``rouge_score`` and ``sacrebleu`` say 0.0 there) and 0.0 when exactly one is.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Callable

from eval.metrics import parse_json

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
    """1 when the prediction parses as JSON (``eval.metrics.parse_json``) and validates against ``schema`` (draft
    from its ``$schema``, default latest; ``format`` not asserted). A missing or invalid schema raises ValueError."""
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"json_schema_valid needs a `schema` option (a dict), got {schema!r}")
    validator = _validator(json.dumps(schema, sort_keys=True))
    ok, value = parse_json(prediction)
    return float(ok and validator.is_valid(value))


TEXT_METRICS: dict[str, Callable[..., float | None]] = {
    f.__name__: f for f in (exact_match_normalized, token_f1, rouge_l, chrf, regex_match, json_schema_valid)}

OTHER = "<other>"


@dataclass
class ClassificationReport:
    """Corpus-level scores: ``per_label[label]`` (precision, recall, f1, support) and ``confusion[reference][answer]``
    whose columns are the labels plus ``"<other>"``, the predictions outside the label set (``outside_label_set``)."""

    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    outside_label_set: int = 0


def _norm_label(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def classification_report(predictions: list[str], references: list[str], labels: list[str]) -> ClassificationReport:
    """Accuracy, macro-F1, per-label scores and a confusion table for label predictions.

    Labels match after NFKC, strip and case-fold only; a prediction outside the label set is wrong, a reference
    outside it raises ValueError. Undefined scores are 0 and macro-F1 averages over all ``labels``, as sklearn's
    ``f1_score(refs, preds, average="macro", labels=labels, zero_division=0)``."""
    if len(predictions) != len(references):
        raise ValueError(f"classification_report: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("classification_report: no rows to score")
    if not labels:
        raise ValueError("classification_report: empty label set")
    canonical: dict[str, str] = {}
    for label in labels:
        key = _norm_label(label)
        if key in canonical:
            raise ValueError(f"classification_report: labels {canonical[key]!r} and {label!r} are the same "
                             f"after normalisation")
        if label == OTHER:
            raise ValueError(f"classification_report: {OTHER!r} is reserved for predictions outside the label set")
        canonical[key] = label

    confusion = {label: {col: 0 for col in [*labels, OTHER]} for label in labels}
    outside = correct = 0
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        ref_label = canonical.get(_norm_label(ref))
        if ref_label is None:
            raise ValueError(f"classification_report: reference at row {i} is {ref!r}, which is not one of the "
                             f"labels {labels}")
        pred_label = canonical.get(_norm_label(pred))
        if pred_label is None:
            outside += 1
            pred_label = OTHER
        confusion[ref_label][pred_label] += 1
        correct += pred_label == ref_label

    per_label: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = confusion[label][label]
        support = sum(confusion[label].values())
        predicted = sum(confusion[ref][label] for ref in labels)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        denom = predicted + support  # 2tp + fp + fn
        f1 = 2 * tp / denom if denom else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": float(support)}

    return ClassificationReport(correct / len(references), sum(s["f1"] for s in per_label.values()) / len(labels),
                                per_label, confusion, outside)
