"""Text-similarity, format and classification metrics for generated answers.

Per-row metrics follow the style of ``eval.metrics``: ``fn(prediction, reference, **options) -> float | None``,
returning a score in [0, 1] (None = not applicable to that row). ``classification_report`` is corpus-level.

Conventions shared by the overlap metrics (``token_f1``, ``rouge_l``, ``chrf``): when the prediction and the
reference are *both* empty after the metric's own preprocessing the score is 1.0 (nothing was asked for and
nothing was given); when exactly one of them is empty it is 0.0. ROUGE-L and chrF are computed by ``rouge_score``
and ``sacrebleu``, which return 0.0 for the both-empty case; that is the only place these metrics differ from them.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from eval.metrics import parse_json

# --------------------------------------------------------------------------------------------------
# Normalisation and tokenisation
# --------------------------------------------------------------------------------------------------

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")

# Scripts written without spaces between words: each character is its own token (as in BERT's basic tokenizer
# and MLQA's evaluation), otherwise a whole Chinese/Japanese sentence would be a single "word".
_CJK_RANGES = (
    (0x3040, 0x30FF),    # Hiragana, Katakana
    (0x3400, 0x4DBF),    # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),    # CJK Unified Ideographs
    (0xF900, 0xFAFF),    # CJK Compatibility Ideographs
    (0x20000, 0x2EBEF),  # CJK Unified Ideographs Extensions B-F
    (0x2F800, 0x2FA1F),  # CJK Compatibility Ideographs Supplement
)


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _split_cjk(text: str) -> list[str]:
    """Whitespace split, with every CJK ideograph / kana character as a separate token."""
    if text.isascii():
        return text.split()
    return "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text).split()


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation, made Unicode-safe.

    NFKC, case-fold, delete punctuation (ASCII ``string.punctuation`` as SQuAD does, plus every Unicode
    punctuation character, e.g. curly quotes, CJK full stops), drop the articles a/an/the, collapse whitespace.
    On ASCII text this is exactly SQuAD's ``normalize_answer``.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_tokens(text: str) -> list[str]:
    """Tokens of ``normalize_answer(text)`` (whitespace split, CJK characters split individually)."""
    return _split_cjk(normalize_answer(text))


def rouge_tokens(text: str) -> list[str]:
    """ROUGE tokenisation: ``rouge_score``'s default tokenizer (no stemming), extended to Unicode.

    ``rouge_score`` lowercases, turns every character outside ``[a-z0-9]`` into a space and splits, which drops
    all non-ASCII letters. Here: NFKC, case-fold, keep letters, digits and combining marks, everything else
    (punctuation, symbols, underscore) separates tokens, CJK characters are single tokens. Identical to
    ``rouge_score`` on ASCII input.
    """
    if text.isascii():
        return re.findall(r"[a-z0-9]+", text.lower())
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = []
    for ch in text:
        if _is_cjk(ch):
            chars.append(f" {ch} ")
        elif ch.isalnum() or unicodedata.category(ch).startswith("M"):
            chars.append(ch)
        else:
            chars.append(" ")
    return "".join(chars).split()


# --------------------------------------------------------------------------------------------------
# Per-row metrics
# --------------------------------------------------------------------------------------------------


def exact_match_normalized(prediction: str, reference: str, **_: Any) -> float:
    """1 when the answers are equal after SQuAD-style normalisation (see ``normalize_answer``)."""
    return float(normalized_tokens(prediction) == normalized_tokens(reference))


def token_f1(prediction: str, reference: str, **_: Any) -> float:
    """SQuAD token F1 (bag-of-tokens overlap) on normalised tokens.

    Both sides empty after normalisation -> 1.0; exactly one empty -> 0.0 (the SQuAD v2 convention).
    """
    pred, ref = normalized_tokens(prediction), normalized_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _RougeTokenizer:
    """``rouge_score`` tokenizer interface (``tokenize(text) -> list[str]``) backed by ``rouge_tokens``."""

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokens(text)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imports nltk (slow): only when ROUGE-L is scored

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_RougeTokenizer())


def rouge_l(prediction: str, reference: str, **_: Any) -> float:
    """ROUGE-L F-measure: ``rouge_score``'s rougeL fmeasure (no stemming) over ``rouge_tokens``, which equals its
    default tokenizer on ASCII text and keeps non-ASCII letters. Both sides without tokens -> 1.0, exactly one
    -> 0.0."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure  # rouge_score takes (target, prediction)


@lru_cache(maxsize=16)
def _chrf_scorer(char_order: int, beta: float) -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF(char_order=char_order, word_order=0, beta=beta)


def chrf(prediction: str, reference: str, char_order: int = 6, beta: float = 2.0, **_: Any) -> float:
    """Sentence-level chrF (character n-gram F-score), on the 0-1 scale:
    ``sacrebleu.metrics.CHRF(char_order, word_order=0, beta).sentence_score(pred, [ref]).score / 100``
    (case-sensitive, whitespace removed, no Unicode normalisation). Both sides empty (after removing whitespace)
    -> 1.0 where sacreBLEU says 0.0; exactly one -> 0.0.
    """
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
    """1 when the prediction parses as JSON (``eval.metrics.parse_json``: one surrounding ``` fence allowed) and
    validates against ``schema`` (draft chosen by the schema's ``$schema``, default latest; ``format`` is not
    asserted). The reference is not used. A missing or invalid schema raises ValueError."""
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"json_schema_valid needs a `schema` option (a dict), got {schema!r}")
    validator = _validator(json.dumps(schema, sort_keys=True))
    ok, value = parse_json(prediction)
    return float(ok and validator.is_valid(value))


TEXT_METRICS: dict[str, Callable[..., float | None]] = {
    "exact_match_normalized": exact_match_normalized,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "chrf": chrf,
    "regex_match": regex_match,
    "json_schema_valid": json_schema_valid,
}

# --------------------------------------------------------------------------------------------------
# Classification (corpus-level)
# --------------------------------------------------------------------------------------------------

OTHER = "<other>"


@dataclass
class ClassificationReport:
    """Corpus-level classification scores.

    ``per_label[label]`` holds precision, recall, f1 and support (the number of rows with that reference).
    ``confusion[reference_label][predicted]`` counts rows; the predicted columns are the labels plus ``"<other>"``
    for predictions outside the label set (always present, possibly 0). ``outside_label_set`` counts those rows.
    """

    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    outside_label_set: int = 0


def _norm_label(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def classification_report(predictions: list[str], references: list[str], labels: list[str]) -> ClassificationReport:
    """Accuracy, macro-F1, per-label scores and a confusion table for label predictions.

    Predictions and references are matched to ``labels`` after NFKC, stripping and case-folding (so " Positive\\n"
    counts as "positive"; no other cleaning: "positive." is outside the label set). A prediction outside the label
    set is wrong, counted in ``outside_label_set`` and in the ``"<other>"`` column. A reference outside the label
    set raises ValueError naming the row.

    Precision, recall and F1 are 0 where undefined (no predictions / no support), and macro-F1 is the plain mean
    over *all* ``labels``, so a label that never occurs in either references or predictions contributes an F1
    of 0. This equals sklearn's ``f1_score(refs, preds, average="macro", labels=labels, zero_division=0)``.
    """
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

    return ClassificationReport(
        accuracy=correct / len(references),
        macro_f1=sum(s["f1"] for s in per_label.values()) / len(labels),
        per_label=per_label,
        confusion=confusion,
        outside_label_set=outside,
    )
