"""Optional language filter (data.clean.language): offline detection, rows rejected with the language found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from data_prep.language import LanguageFilter
from data_prep.prepare import prepare
from tailor.errors import TailorError
from tailor.recipe import load_recipe
from tailor.runs import run_paths


def chat(question: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": "You are a helpful hotel assistant."},
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


ENGLISH = chat("Is breakfast included in the room rate?", "Yes, breakfast is served from seven until ten.")
GERMAN = chat("Ist das Frühstück im Zimmerpreis inbegriffen?", "Ja, das Frühstück gibt es von sieben bis zehn Uhr.")
FRENCH = chat("Le petit déjeuner est-il compris dans le prix de la chambre ?",
              "Oui, le petit déjeuner est servi de sept heures à dix heures.")


@pytest.fixture(scope="module")
def en_de() -> LanguageFilter:
    return LanguageFilter(["en", "de"], min_confidence=0.5)


def test_kept_languages_pass_and_others_are_named(en_de: LanguageFilter) -> None:
    assert en_de.check(ENGLISH) is None and en_de.check(GERMAN) is None
    assert en_de.check(FRENCH) == "language fr not in data.clean.language.keep"
    assert en_de.detect("Das Zimmer war sauber und das Personal freundlich.")[0] == "de"


def test_system_prompt_does_not_decide_the_language(en_de: LanguageFilter) -> None:
    german_system = [{"role": "system", "content": "Du bist ein hilfreicher Assistent für unser Hotel in Berlin."}]
    assert en_de.check(german_system + FRENCH[1:]) is not None  # the row's own words are French
    assert LanguageFilter(["de"], 0.5).check(german_system + ENGLISH[1:]) is not None


def test_low_confidence_is_rejected() -> None:
    strict = LanguageFilter(["en"], min_confidence=0.999)
    assert strict.check(chat("ok?", "ok")) is not None
    assert LanguageFilter(["en"], min_confidence=0.0).check(ENGLISH) is None


def test_unknown_language_code_is_a_recipe_error() -> None:
    with pytest.raises(TailorError, match="data.clean.language.keep: unknown language code"):
        LanguageFilter(["english"], 0.5)


def test_prepare_counts_and_lists_rejected_languages(tmp_path: Path, tiny_qwen25: Path) -> None:
    rows = [{"messages": m[1:]} for m in [ENGLISH, GERMAN] * 6 + [FRENCH] * 3]
    for i, row in enumerate(rows):  # distinct rows, so dedup keeps them
        row["messages"][0] = {**row["messages"][0], "content": row["messages"][0]["content"] + f" ({i})"}
    data = write_jsonl(tmp_path / "lang.jsonl", rows)
    recipe_file = tmp_path / "lang.yaml"
    recipe_file.write_text(json.dumps({
        "name": "lang", "output_dir": str(tmp_path / "runs"), "model": {"name_or_path": str(tiny_qwen25)},
        "data": {"sources": [{"path": str(data)}], "clean": {"language": {"keep": ["en", "de"]},
                                                             "dedup": {"near": False}}},
        "training": {"max_length": 128}, "tracking": {"mode": "disabled"}}))
    manifest = prepare(load_recipe(recipe_file))
    assert manifest["rows"]["rejected_by_reason"] == {"language fr not in data.clean.language.keep": 3}
    assert manifest["rows"]["train"] + manifest["rows"]["heldout"] == 12
    rejected = [json.loads(line) for line in run_paths(load_recipe(recipe_file)).rejected.read_text().splitlines()]
    assert sorted(r["line"] for r in rejected) == [13, 14, 15] and {r["kind"] for r in rejected} == {"filtered"}
