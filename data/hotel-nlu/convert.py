"""Turn the NLU++ hotels folds into a chat extraction task: guest message -> JSON of intents and slots.

Writes three files (deterministic):
- `hotel_nlu.jsonl`: folds 0-17, chat messages: the training data (911 rows);
- `hotel_nlu_test.csv`: folds 18-19, columns `text,answer`: the fixed test set (98 rows), never trained on;
- `hotel_nlu_hard.jsonl`: the rows of folds 16-17 with two or more intents and at least one slot, chat messages:
  a "hard cases" set. These rows are also in `hotel_nlu.jsonl`, so a recipe that names this set shows
  tailor removing the overlapping training rows (recipes/hotel-sets.yaml).

Usage: python data/hotel-nlu/convert.py
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_FOLDS, TEST_FOLDS, HARD_FOLDS = range(0, 18), range(18, 20), range(16, 18)


def to_answer(example: dict) -> str:
    """The reference answer: sorted intents and the slot texts, as compact, key-sorted JSON."""
    slots = {name: slot["text"] for name, slot in sorted(example.get("slots", {}).items())}
    return json.dumps({"intents": sorted(example.get("intents", [])), "slots": slots}, ensure_ascii=False)


def fold(number: int) -> list[dict]:
    return json.loads((HERE / "source" / f"fold{number}.json").read_text(encoding="utf-8"))


def chat(example: dict) -> dict:
    return {"messages": [{"role": "user", "content": example["text"]},
                         {"role": "assistant", "content": to_answer(example)}]}


def is_hard(example: dict) -> bool:
    return len(example.get("intents", [])) >= 2 and len(example.get("slots", {})) >= 1


def write_jsonl(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {name}")


def main() -> None:
    write_jsonl("hotel_nlu.jsonl", [chat(e) for n in TRAIN_FOLDS for e in fold(n)])
    write_jsonl("hotel_nlu_hard.jsonl", [chat(e) for n in HARD_FOLDS for e in fold(n) if is_hard(e)])
    test = [(e["text"], to_answer(e)) for n in TEST_FOLDS for e in fold(n)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "answer"])
    writer.writerows(test)
    (HERE / "hotel_nlu_test.csv").write_text(buffer.getvalue(), encoding="utf-8")
    print(f"wrote {len(test)} rows to hotel_nlu_test.csv")


if __name__ == "__main__":
    main()
