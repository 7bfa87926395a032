"""Render many conversations, in one process or several (`data.num_proc`) via datasets.map."""

from __future__ import annotations

from typing import Any

from data_prep.formats import RowError
from data_prep.render import Rendered, Renderer


def render_one(renderer: Renderer, messages: list[dict[str, Any]], max_length: int) -> Rendered | str:
    """The rendered example, or the reason it cannot be used."""
    try:
        return renderer.render(messages, max_length)
    except RowError as err:
        return str(err)


def render_all(renderer: Renderer, conversations: list[list[dict[str, Any]]], max_length: int,
               num_proc: int = 1) -> list[Rendered | str]:
    """Render every conversation, in order; with num_proc > 1 the work is split over processes."""
    if num_proc <= 1 or len(conversations) < 2 * num_proc:
        return [render_one(renderer, messages, max_length) for messages in conversations]
    import json

    from datasets import Dataset

    dataset = Dataset.from_dict({"messages": [json.dumps(m, ensure_ascii=False) for m in conversations]})
    mapped = dataset.map(_render_batch, batched=True, batch_size=256, num_proc=num_proc,
                         fn_kwargs={"renderer": renderer, "max_length": max_length},
                         remove_columns=["messages"])
    out: list[Rendered | str] = []
    for row in mapped:
        if row["error"]:
            out.append(row["error"])
        else:
            out.append(Rendered(row["input_ids"], row["assistant_masks"], row["truncated"], row["trained_turns"],
                                row["untrainable_history"], json.loads(row["role_tokens"]),
                                json.loads(row["role_trained"])))
    return out


def _render_batch(batch: dict[str, list], renderer: Renderer, max_length: int) -> dict[str, list]:
    import json

    columns: dict[str, list] = {k: [] for k in ("error", "input_ids", "assistant_masks", "truncated",
                                                "trained_turns", "untrainable_history", "role_tokens",
                                                "role_trained")}
    for text in batch["messages"]:
        result = render_one(renderer, json.loads(text), max_length)
        ok = isinstance(result, Rendered)
        columns["error"].append("" if ok else result)
        columns["input_ids"].append(result.input_ids if ok else [])
        columns["assistant_masks"].append(result.assistant_masks if ok else [])
        columns["truncated"].append(result.truncated if ok else False)
        columns["trained_turns"].append(result.trained_turns if ok else 0)
        columns["untrainable_history"].append(result.untrainable_history if ok else 0)
        columns["role_tokens"].append(json.dumps(result.role_tokens if ok else {}))
        columns["role_trained"].append(json.dumps(result.role_trained if ok else {}))
    return columns
