"""Pairwise LLM judge through any OpenAI-compatible endpoint, with position swapping.

Each row is judged in both orders and scored as the mean (win 1, tie 0.5, loss 0), so a judge that always prefers
the first position gives a tie. Unparseable replies exclude the row. The API key is read from the environment only.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from tailor.errors import TailorError
from tailor.schema import JudgeSettings

RUBRIC = ("You are a strict grader comparing two answers to the same request. Judge only: (1) correctness against "
          "the reference answer, (2) completeness, (3) following the requested format exactly, (4) no invented "
          "facts. Ignore length and style otherwise. Reply with exactly one word: A, B or TIE.")
VERDICT = re.compile(r"\b(A|B|TIE)\b")


def _client(settings: JudgeSettings):
    from openai import OpenAI

    key = "none"
    if settings.api_key_env:
        key = os.environ.get(settings.api_key_env, "")
        if not key:
            raise TailorError(f"eval.judge.api_key_env: environment variable {settings.api_key_env} is not set.")
    return OpenAI(base_url=settings.url, api_key=key, timeout=settings.timeout_s, max_retries=2)


def _request_text(row: dict[str, Any]) -> str:
    """The conversation up to the answer, as plain `role: content` lines (not the rendered template)."""
    try:
        messages = json.loads(row["messages"])[:-1]
        return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in messages)
    except (KeyError, TypeError, ValueError):
        return row.get("prompt", "")


def _ask(client, settings: JudgeSettings, row: dict, first: str, second: str) -> str | None:
    content = (f"Request:\n{_request_text(row)}\n\nReference answer:\n{row['reference']}\n\nAnswer A:\n{first}\n\n"
               f"Answer B:\n{second}\n\nWhich answer is better? Reply A, B or TIE.")
    try:
        reply = client.chat.completions.create(model=settings.model, temperature=0.0, max_tokens=8, messages=[
            {"role": "system", "content": settings.rubric or RUBRIC}, {"role": "user", "content": content}])
    except Exception as err:  # noqa: BLE001 - any transport/API failure becomes one clear message
        raise TailorError(f"eval.judge: request to {settings.url} failed: {type(err).__name__}: {err}") from None
    found = VERDICT.search((reply.choices[0].message.content or "").strip().upper())
    return found.group(1) if found else None


def _row_score(first: str | None, swapped: str | None) -> float | None:
    """Tuned's score from (A=other, B=tuned) and (A=tuned, B=other) verdicts."""
    if first is None or swapped is None:
        return None
    points = {"B": 1.0, "TIE": 0.5, "A": 0.0}[first] + {"A": 1.0, "TIE": 0.5, "B": 0.0}[swapped]
    return points / 2


def judge_pair(rows: list[dict], other: list[str | None], tuned: list[str], settings: JudgeSettings,
               confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Win rate of tuned over `other` (ties count half) with a paired bootstrap interval of win rate - 0.5."""
    from eval.stats import paired_bootstrap

    client = _client(settings)
    chosen = [i for i in range(len(rows)) if other[i] is not None][: settings.max_rows]

    def both(i: int) -> tuple[str | None, str | None]:
        return (_ask(client, settings, rows[i], other[i], tuned[i]),
                _ask(client, settings, rows[i], tuned[i], other[i]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(both, chosen))
    scores = [_row_score(a, b) for a, b in verdicts]
    valid = [s for s in scores if s is not None]
    result: dict[str, Any] = {"rows": len(chosen), "invalid_replies": len(scores) - len(valid),
                              "wins": sum(s > 0.5 for s in valid), "losses": sum(s < 0.5 for s in valid),
                              "ties": sum(s == 0.5 for s in valid),
                              "position_flips": sum(a is not None and b is not None and a == b != "TIE"
                                                    for a, b in verdicts),
                              "per_row": {rows[i]["id"]: {"verdicts": list(v), "score": s}
                                          for i, v, s in zip(chosen, verdicts, scores)}}
    if valid:
        c = paired_bootstrap([0.5] * len(scores), scores, "judge_win_rate", resamples=resamples,
                             confidence=confidence, seed=seed)
        result.update(win_rate=c.tuned_mean, ci_low=c.ci_low + 0.5, ci_high=c.ci_high + 0.5,
                      excludes_half=c.excludes_zero, comparison=asdict(c))
    return result
