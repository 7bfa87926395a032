"""Render many conversations, in one process or several (`data.num_proc`, forked worker processes)."""

from __future__ import annotations

import multiprocessing
from typing import Any

from data_prep.formats import RowError
from data_prep.render import Rendered, Renderer

_WORKER: dict[str, Any] = {}


def render_one(renderer: Renderer, messages: list[dict[str, Any]], max_length: int) -> Rendered | str:
    """The rendered example, or the reason it cannot be used."""
    try:
        return renderer.render(messages, max_length)
    except RowError as err:
        return str(err)


def render_all(renderer: Renderer, conversations: list[list[dict[str, Any]]], max_length: int,
               num_proc: int = 1) -> list[Rendered | str]:
    """Render every conversation, in order; with num_proc > 1 chunks go to forked processes."""
    if num_proc <= 1 or len(conversations) < 64 * num_proc:
        return [render_one(renderer, messages, max_length) for messages in conversations]
    _WORKER.update(renderer=renderer, max_length=max_length)  # inherited by the forked workers
    chunk = max(64, len(conversations) // (num_proc * 8))
    pieces = [conversations[i:i + chunk] for i in range(0, len(conversations), chunk)]
    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        results = pool.map(_render_chunk, pieces)
    _WORKER.clear()
    return [item for piece in results for item in piece]


def _render_chunk(conversations: list[list[dict[str, Any]]]) -> list[Rendered | str]:
    return [render_one(_WORKER["renderer"], messages, _WORKER["max_length"]) for messages in conversations]
