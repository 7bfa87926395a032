"""Optional language filter (`data.clean.language`): py3langid, whose model ships inside the package (offline).

A row's language is detected on every message but the system prompt; it is kept when in `keep` with at least
`min_confidence` (normalised probability), otherwise the reason names the language found.
"""

from __future__ import annotations

from typing import Any

from data_prep.formats import row_text
from tailor.errors import TailorError


class LanguageFilter:
    """Detects a conversation's language and says why it is not kept (None: kept)."""

    def __init__(self, keep: list[str], min_confidence: float) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        known = set(self.identifier.nb_classes)
        unknown = sorted(set(keep) - known)
        if unknown:
            raise TailorError(f"data.clean.language.keep: unknown language code(s) {unknown}; use ISO 639-1 codes "
                              f"such as en, de, fr (known: {', '.join(sorted(known))}).")
        self.keep, self.min_confidence = set(keep), min_confidence

    def detect(self, text: str) -> tuple[str, float]:
        """(language code, probability) of a text."""
        language, probability = self.identifier.classify(text)
        return str(language), float(probability)

    def check(self, messages: list[dict[str, Any]]) -> str | None:
        language, probability = self.detect(row_text(messages))
        if language not in self.keep:
            return f"language {language} not in data.clean.language.keep"
        if probability < self.min_confidence:
            return "language confidence below data.clean.language.min_confidence"
        return None


def language_filter(settings: Any) -> LanguageFilter | None:
    """The filter for `data.clean.language`, or None when the step is off."""
    return None if settings is None else LanguageFilter(list(settings.keep), settings.min_confidence)
