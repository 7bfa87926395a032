"""Build DPO preference pairs for the hotel task from data we have: the reference answer is chosen, the SFT
model's own wrong answer to the same message is rejected (on-policy negatives, as in the "SFT then DPO" recipes).

Needs the demo's SFT adapter (`make demo`, or `make data train RECIPE=recipes/hotel-demo.yaml`). It answers the
training messages of `hotel_nlu.jsonl` greedily, exactly as `make eval` generates (same chat template, system prompt
and settings), and keeps a pair where the answer gets a field of the reference wrong (json_field_accuracy < 1 on
intents and slots). Rows are taken in file order; deterministic (greedy decoding). Writes `hotel_pairs.jsonl`:
{"messages": [user turn], "chosen": reference JSON, "rejected": model answer, "line": line in hotel_nlu.jsonl}.
Training messages only: the test file (hotel_nlu_test.csv) is never answered here.

Usage: .venv/bin/python data/hotel-nlu/make_pairs.py [--rows 400] [--adapter runs/hotel-demo/adapter]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "hotel-demo.yaml"))
    parser.add_argument("--adapter", default=None, help="default: the recipe's run folder adapter")
    parser.add_argument("--rows", type=int, default=400, help="training messages answered (first N of the file)")
    parser.add_argument("--out", default=str(HERE / "hotel_pairs.jsonl"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from peft import PeftModel

    from eval.generate import generate
    from tailor.metrics import json_field_accuracy
    from tailor.models import load_model, load_tokenizer
    from tailor.recipe import load_recipe
    from tailor.render import renderer_for
    from tailor.runs import atomic_write_text, run_paths

    recipe = load_recipe(args.recipe)
    adapter = Path(args.adapter) if args.adapter else run_paths(recipe).adapter_dir
    if not (adapter / "adapter_config.json").is_file():
        raise SystemExit(f"no SFT adapter in {adapter}: run `make demo` first")
    rows = [json.loads(line) for line in (HERE / "hotel_nlu.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = rows[: args.rows]
    system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    tokenizer = load_tokenizer(recipe.model)
    renderer = renderer_for(recipe, tokenizer)
    prompts = [renderer.prompt(system + row["messages"]) for row in rows]
    model = PeftModel.from_pretrained(load_model(recipe.model, for_generation=True), str(adapter))
    answers = generate(model, tokenizer, prompts, recipe.eval, desc="answer").texts
    fields = recipe.eval.json_fields
    pairs, right, empty = [], 0, 0
    for line, (row, answer) in enumerate(zip(rows, answers), start=1):
        reference = row["messages"][-1]["content"]
        if not answer.strip():
            empty += 1  # nothing to prefer the reference over
        elif json_field_accuracy(answer, reference, fields=fields) == 1.0:
            right += 1
        else:
            pairs.append({"messages": row["messages"][:-1], "chosen": reference, "rejected": answer.strip(),
                          "line": line})
    atomic_write_text(Path(args.out), "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    print(f"{len(rows)} messages answered: {right} right, {empty} empty, {len(pairs)} pairs written to {args.out}")


if __name__ == "__main__":
    main()
