"""Turn the NLU++ hotels folds into a chat extraction task: guest message -> JSON of intents and slots.

Usage: python data/hotel-nlu/convert.py  (writes data/hotel-nlu/hotel_nlu.jsonl; deterministic)
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def to_answer(example: dict) -> str:
    """The reference answer: sorted intents and the slot texts, as compact, key-sorted JSON."""
    slots = {name: slot["text"] for name, slot in sorted(example.get("slots", {}).items())}
    return json.dumps({"intents": sorted(example.get("intents", [])), "slots": slots}, ensure_ascii=False)


def main() -> None:
    rows = []
    for fold in range(20):
        for example in json.loads((HERE / "source" / f"fold{fold}.json").read_text(encoding="utf-8")):
            rows.append({
                "messages": [
                    {"role": "user", "content": example["text"]},
                    {"role": "assistant", "content": to_answer(example)},
                ]
            })
    out = HERE / "hotel_nlu.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
