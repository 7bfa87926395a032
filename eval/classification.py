"""Corpus-level classification scores (accuracy, macro-F1, per-label scores, confusion table); the per-row
metrics, ``classification`` (``label_match``) among them, are in ``tailor.metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from tailor.metrics import normalize_label

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


def classification_report(predictions: list[str], references: list[str], labels: list[str]) -> ClassificationReport:
    """Accuracy, macro-F1, per-label scores and a confusion table for label predictions.

    Labels match after NFKC, strip and case-fold only (``tailor.metrics.normalize_label``); a prediction outside
    the label set is wrong, a reference outside it raises ValueError. Undefined scores are 0 and macro-F1 averages
    over all ``labels``, as sklearn's ``f1_score(refs, preds, average="macro", labels=labels, zero_division=0)``."""
    if len(predictions) != len(references):
        raise ValueError(f"classification_report: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("classification_report: no rows to score")
    if not labels:
        raise ValueError("classification_report: empty label set")
    canonical: dict[str, str] = {}
    for label in labels:
        key = normalize_label(label)
        if key in canonical:
            raise ValueError(f"classification_report: labels {canonical[key]!r} and {label!r} are the same "
                             f"after normalisation")
        if label == OTHER:
            raise ValueError(f"classification_report: {OTHER!r} is reserved for predictions outside the label set")
        canonical[key] = label

    confusion = {label: {col: 0 for col in [*labels, OTHER]} for label in labels}
    outside = correct = 0
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        ref_label = canonical.get(normalize_label(ref))
        if ref_label is None:
            raise ValueError(f"classification_report: reference at row {i} is {ref!r}, which is not one of the "
                             f"labels {labels}")
        pred_label = canonical.get(normalize_label(pred))
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
